"""Score statistics against scipy / scikit-learn, published values and hand computations."""

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from CACScoringLib.errors import InputError
from CACScoringLib.evaluation.agreement import (
    bland_altman,
    bootstrap_ci,
    category_agreement,
    icc_a1,
    pearson,
    score_agreement,
    spearman,
    weighted_kappa,
)
from CACScoringLib.scoring import RISK_CATEGORIES, risk_category

RNG = np.random.default_rng(2024)
REFERENCE = np.round(RNG.gamma(0.8, 150.0, 25), 1)
PREDICTED = np.round(np.clip(REFERENCE * 1.08 + RNG.normal(0, 25, 25), 0, None), 1)

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; published ICC(2,1) = 0.29.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float
)


def test_correlations_match_scipy():
    assert float(pearson(REFERENCE, PREDICTED)) == pytest.approx(stats.pearsonr(REFERENCE, PREDICTED).statistic)
    tied_x = np.array([0, 0, 0, 5, 5, 12, 40, 40, 300.0])
    tied_y = np.array([0, 3, 0, 5, 9, 12, 35, 50, 250.0])
    assert float(spearman(tied_x, tied_y)) == pytest.approx(stats.spearmanr(tied_x, tied_y).statistic)


def test_correlations_are_vectorised_over_resamples():
    x = RNG.normal(size=(4, 10))
    y = x + RNG.normal(size=(4, 10))
    expected = [stats.spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)]
    assert spearman(x, y) == pytest.approx(expected)
    assert math.isnan(float(pearson(np.ones(5), np.arange(5.0))))  # constant input


def test_icc_matches_shrout_fleiss_published_example():
    # mean squares of their Table 2: BMS 11.24, JMS 32.49, EMS 1.02 -> (11.24-1.02)/(11.24+3*1.02+4*(32.49-1.02)/6)
    assert float(icc_a1(SHROUT_FLEISS)) == pytest.approx(0.2897, abs=5e-4)
    assert round(float(icc_a1(SHROUT_FLEISS)), 2) == 0.29


def test_icc_hand_computed_two_raters_and_properties():
    # rows (1,2), (2,3), (3,5): MSR = 19/6, MSC = 8/3, MSE = 1/6 -> ICC = 3 / (10/3 + 5/3) = 0.6
    assert float(icc_a1(np.array([[1, 2], [2, 3], [3, 5]], float))) == pytest.approx(0.6)
    pairs = np.stack([REFERENCE, REFERENCE], axis=-1)
    assert float(icc_a1(pairs)) == pytest.approx(1.0)
    shifted = np.stack([REFERENCE, REFERENCE + 50], axis=-1)  # absolute agreement penalises bias
    assert float(icc_a1(shifted)) < 0.99
    assert float(pearson(REFERENCE, REFERENCE + 50)) == pytest.approx(1.0)


def test_bland_altman_hand_computed():
    result = bland_altman(np.array([1.0, 2, 3, 4]), np.array([2.0, 2, 5, 4]))
    sd = math.sqrt(2.75 / 3)  # differences 1, 0, 2, 0 around their mean 0.75
    assert result == pytest.approx(
        {"mean_difference": 0.75, "sd_difference": sd, "lower_limit": 0.75 - 1.96 * sd, "upper_limit": 0.75 + 1.96 * sd}
    )


def test_score_agreement_regression_and_pvalues_match_scipy_and_numpy():
    result = score_agreement(REFERENCE, PREDICTED, resamples=300, seed=1)
    slope, intercept = np.polyfit(REFERENCE, PREDICTED, 1)
    assert result["regression"] == pytest.approx({"slope": slope, "intercept": intercept})
    scipy_regression = stats.linregress(REFERENCE, PREDICTED)
    assert result["regression"]["slope"] == pytest.approx(scipy_regression.slope)
    assert result["pearson"]["p_value"] == pytest.approx(stats.pearsonr(REFERENCE, PREDICTED).pvalue)
    assert result["spearman"]["rho"] == pytest.approx(stats.spearmanr(REFERENCE, PREDICTED).statistic)
    fisher = stats.pearsonr(REFERENCE, PREDICTED).confidence_interval(0.95)
    assert result["pearson"]["fisher_ci"] == pytest.approx({"low": fisher.low, "high": fisher.high})
    for name in ("pearson", "spearman", "icc_a1"):
        ci = result[name]["bootstrap_ci"]
        point = result[name]["r" if name == "pearson" else "rho" if name == "spearman" else "icc"]
        assert ci["low"] <= point <= ci["high"] <= 1.0
        assert ci["valid_resamples"] == 300


def test_score_agreement_of_identical_scores():
    result = score_agreement(REFERENCE, REFERENCE, resamples=50)
    assert result["pearson"]["r"] == pytest.approx(1.0)
    assert result["icc_a1"]["icc"] == pytest.approx(1.0)
    assert result["regression"] == pytest.approx({"slope": 1.0, "intercept": 0.0}, abs=1e-9)
    assert result["bland_altman"]["mean_difference"] == 0.0


def test_bootstrap_percentile_ci_agrees_with_scipy_bootstrap():
    def mean_difference(x, y):
        return (y - x).mean(axis=-1)

    ours = bootstrap_ci(mean_difference, REFERENCE, PREDICTED, resamples=20000, seed=3)
    theirs = stats.bootstrap(
        (REFERENCE, PREDICTED), lambda x, y, axis=-1: (y - x).mean(axis=axis), paired=True, vectorized=True,
        n_resamples=20000, method="percentile", rng=np.random.default_rng(9),
    ).confidence_interval
    spread = (PREDICTED - REFERENCE).std() / math.sqrt(len(REFERENCE))
    assert ours["low"] == pytest.approx(theirs.low, abs=0.1 * spread)
    assert ours["high"] == pytest.approx(theirs.high, abs=0.1 * spread)


def test_bootstrap_is_seeded_and_drops_undefined_resamples():
    first = bootstrap_ci(pearson, REFERENCE, PREDICTED, resamples=200, seed=5)
    assert bootstrap_ci(pearson, REFERENCE, PREDICTED, resamples=200, seed=5) == first
    assert bootstrap_ci(pearson, REFERENCE, PREDICTED, resamples=200, seed=6) != first
    # 3 cases, two identical: resamples drawing only those two (or one case) have no defined r
    x, y = np.array([1.0, 1.0, 5.0]), np.array([2.0, 2.0, 7.0])
    few = bootstrap_ci(pearson, x, y, resamples=400, seed=0)
    assert 0 < few["valid_resamples"] < 400
    assert few["low"] == pytest.approx(1.0) and few["high"] == pytest.approx(1.0)


def test_weighted_kappa_hand_computed_and_against_sklearn():
    # observed disagreement 3/6, expected 5/6 (marginals 2,2,2 and 2,3,1) -> kappa = 1 - 3/5
    assert float(weighted_kappa(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0]), 3)) == pytest.approx(0.4)
    reference = RNG.integers(0, 5, 60)
    predicted = np.clip(reference + RNG.integers(-2, 3, 60), 0, 4)
    expected = cohen_kappa_score(reference, predicted, weights="linear", labels=range(5))
    assert float(weighted_kappa(reference, predicted, 5)) == pytest.approx(expected)
    batch = np.stack([reference, predicted[::-1]])
    swapped = np.stack([predicted, reference[::-1]])
    assert weighted_kappa(batch, swapped, 5) == pytest.approx(
        [expected, cohen_kappa_score(reference[::-1], predicted[::-1], weights="linear", labels=range(5))]
    )
    assert math.isnan(float(weighted_kappa(np.zeros(4, int), np.zeros(4, int), 5)))  # one category only


def test_category_agreement_matches_sklearn():
    reference_scores = np.array([0, 0, 3, 8, 25, 60, 150, 390, 420, 900, 15, 0])
    predicted_scores = np.array([0, 2, 3, 12, 25, 90, 120, 410, 380, 1000, 9, 0])
    reference = [risk_category(s) for s in reference_scores]
    predicted = [risk_category(s) for s in predicted_scores]
    result = category_agreement(reference, predicted, RISK_CATEGORIES, resamples=200, seed=0)
    assert result["confusion_matrix"] == confusion_matrix(reference, predicted, labels=list(RISK_CATEGORIES)).tolist()
    index = {c: i for i, c in enumerate(RISK_CATEGORIES)}
    expected = cohen_kappa_score(
        [index[c] for c in reference], [index[c] for c in predicted], weights="linear", labels=range(5)
    )
    assert result["kappa_linear"] == pytest.approx(expected)
    # same category: 0/0, 3/3, 25/25, 60/90, 150/120, 900/1000, 0/0
    assert result["accuracy"] == pytest.approx(7 / 12)
    assert result["bootstrap_ci"]["low"] <= result["kappa_linear"] <= result["bootstrap_ci"]["high"]


def test_bad_input_raises_input_error():
    with pytest.raises(InputError, match="unknown categories"):
        category_agreement(["0", "huge"], ["0", "0"], RISK_CATEGORIES)
    with pytest.raises(InputError, match="at least 2 cases"):
        score_agreement([1.0], [1.0])
    with pytest.raises(InputError, match="finite"):
        score_agreement([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(InputError, match="confidence level"):
        bootstrap_ci(pearson, REFERENCE, PREDICTED, level=95)
