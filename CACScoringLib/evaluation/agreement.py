"""Agreement between reference and predicted scores over a set of cases.

Correlation (Pearson, Spearman), least-squares regression, ICC(A,1), Bland-Altman and, for categories,
the confusion matrix and linearly weighted Cohen kappa. Confidence intervals are percentile bootstraps
over cases (paired resampling, seeded); every statistic is computed by a function vectorised over
resamples so that thousands of resamples stay cheap.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from ..errors import InputError

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
BLAND_ALTMAN_Z = 1.96


def pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis (NaN where either variable is constant)."""
    dx = x - x.mean(axis=-1, keepdims=True)
    dy = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((dx * dx).sum(axis=-1) * (dy * dy).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dx * dy).sum(axis=-1) / denominator
    return np.where(denominator > 0, np.clip(r, -1.0, 1.0), np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho along the last axis: Pearson r of the ranks (ties get their mean rank)."""
    return pearson(stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1))


def icc_a1(ratings: np.ndarray) -> np.ndarray:
    """ICC(A,1) of McGraw & Wong 1996 = ICC(2,1) of Shrout & Fleiss 1979.

    Two-way model, absolute agreement, single measurement. `ratings` is (..., n subjects, k raters):
        ICC = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)
    with MSR, MSC, MSE the mean squares of rows (subjects), columns (raters) and residual of the two-way
    ANOVA without replication. NaN when every rating is the same.
    """
    n, k = ratings.shape[-2:]
    if n < 2 or k < 2:
        raise InputError(f"ICC needs at least 2 cases and 2 raters, not {n} cases and {k} raters")
    grand = ratings.mean(axis=(-2, -1), keepdims=True)
    ss_total = ((ratings - grand) ** 2).sum(axis=(-2, -1))
    ss_rows = k * ((ratings.mean(axis=-1, keepdims=True) - grand) ** 2).sum(axis=(-2, -1))
    ss_cols = n * ((ratings.mean(axis=-2, keepdims=True) - grand) ** 2).sum(axis=(-2, -1))
    ms_rows = ss_rows / (n - 1)
    ms_cols = ss_cols / (k - 1)
    ms_error = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        icc = (ms_rows - ms_error) / denominator
    return np.where(denominator > 0, icc, np.nan)


def _icc_pair(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return icc_a1(np.stack([x, y], axis=-1))


def weighted_kappa(reference: np.ndarray, predicted: np.ndarray, n_categories: int) -> np.ndarray:
    """Cohen kappa with linear weights |i - j| along the last axis; inputs are category indices 0..K-1.

    kappa = 1 - sum(w * observed) / sum(w * expected), expected from the product of the marginals.
    NaN when both raters put every case in one and the same category (no disagreement is possible).
    """
    reference = np.asarray(reference, dtype=np.intp)
    predicted = np.asarray(predicted, dtype=np.intp)
    batch_shape, n = reference.shape[:-1], reference.shape[-1]
    batch = int(np.prod(batch_shape, dtype=np.intp))
    cell = reference.reshape(batch, n) * n_categories + predicted.reshape(batch, n)
    cell += np.arange(batch)[:, None] * n_categories**2
    observed = np.bincount(cell.ravel(), minlength=batch * n_categories**2)
    observed = observed.reshape(batch, n_categories, n_categories) / n
    expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :]
    index = np.arange(n_categories)
    weights = np.abs(index[:, None] - index[None, :])
    disagreement_expected = (weights * expected).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = 1.0 - (weights * observed).sum(axis=(1, 2)) / disagreement_expected
    return np.where(disagreement_expected > 0, kappa, np.nan).reshape(batch_shape)


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict:
    """Percentile bootstrap CI of statistic(x, y), resampling cases (pairs) with replacement.

    `statistic` works along the last axis. Resamples where it is undefined (NaN, e.g. a resample of
    identical cases) are left out, and how many remained is reported; no valid resample gives NaN bounds.
    """
    if not 0 < level < 1:
        raise InputError(f"confidence level must be between 0 and 1, not {level}")
    if resamples < 1:
        raise InputError(f"the number of bootstrap resamples must be >= 1, not {resamples}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(x), size=(resamples, len(x)))
    values = statistic(x[index], y[index])
    values = values[np.isfinite(values)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail]) if values.size else (np.nan, np.nan)
    return {"low": float(low), "high": float(high), "level": level, "valid_resamples": int(values.size)}


def _checked_pairs(reference: Sequence[float], predicted: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(predicted, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise InputError(f"reference and predicted scores must be paired lists, got {len(x)} and {len(y)} values")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("scores must be finite numbers; check the cases whose scoring failed")
    return x, y


def bland_altman(reference: np.ndarray, predicted: np.ndarray) -> dict:
    """Mean difference (predicted - reference), its SD (n-1) and the limits of agreement mean ± 1.96 SD."""
    difference = predicted - reference
    mean = float(difference.mean())
    sd = float(difference.std(ddof=1)) if len(difference) > 1 else float("nan")
    return {
        "mean_difference": mean,
        "sd_difference": sd,
        "lower_limit": mean - BLAND_ALTMAN_Z * sd,
        "upper_limit": mean + BLAND_ALTMAN_Z * sd,
    }


def _scipy_quiet(function, *args):
    """scipy's result, or None where it is undefined (constant input, too few cases)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return function(*args)
        except ValueError:
            return None


def score_agreement(
    reference: Sequence[float],
    predicted: Sequence[float],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict:
    """Agreement of paired scores (one value per case): correlation, regression, ICC(A,1), Bland-Altman.

    Regression is least squares of predicted on reference (predicted = slope * reference + intercept).
    The Pearson CI is given twice: from Fisher's z (scipy) and from the bootstrap.
    """
    x, y = _checked_pairs(reference, predicted)
    n = len(x)
    if n < 2:
        raise InputError(f"score agreement needs at least 2 cases, got {n}")
    ci = {"resamples": resamples, "seed": seed, "level": level}
    pearson_test = _scipy_quiet(stats.pearsonr, x, y) if n >= 3 else None
    # Fisher's z needs n > 3 (its standard error is 1 / sqrt(n - 3))
    fisher = pearson_test.confidence_interval(level) if pearson_test is not None and n > 3 else None
    spearman_test = _scipy_quiet(stats.spearmanr, x, y) if n >= 3 else None
    regression = _scipy_quiet(stats.linregress, x, y) if np.ptp(x) > 0 else None
    nan = float("nan")
    return {
        "n": n,
        "reference_mean": float(x.mean()),
        "predicted_mean": float(y.mean()),
        "pearson": {
            "r": float(pearson(x, y)),
            "p_value": float(pearson_test.pvalue) if pearson_test is not None else nan,
            "fisher_ci": {"low": float(fisher.low), "high": float(fisher.high)} if fisher is not None else None,
            "bootstrap_ci": bootstrap_ci(pearson, x, y, **ci),
        },
        "spearman": {
            "rho": float(spearman(x, y)),
            "p_value": float(spearman_test.pvalue) if spearman_test is not None else nan,
            "bootstrap_ci": bootstrap_ci(spearman, x, y, **ci),
        },
        "regression": {
            "slope": float(regression.slope) if regression is not None else nan,
            "intercept": float(regression.intercept) if regression is not None else nan,
        },
        "icc_a1": {"icc": float(_icc_pair(x, y)), "bootstrap_ci": bootstrap_ci(_icc_pair, x, y, **ci)},
        "bland_altman": bland_altman(x, y),
    }


def category_agreement(
    reference: Sequence[str],
    predicted: Sequence[str],
    categories: Sequence[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict:
    """Confusion matrix (rows reference, columns predicted, in `categories` order, which must be ordinal)
    and linearly weighted Cohen kappa with a bootstrap CI."""
    position = {category: i for i, category in enumerate(categories)}
    unknown = sorted({c for c in (*reference, *predicted) if c not in position})
    if unknown:
        raise InputError(f"unknown categories {', '.join(map(str, unknown))}: expected {', '.join(categories)}")
    if len(reference) != len(predicted) or not reference:
        raise InputError(f"need paired, non-empty category lists, got {len(reference)} and {len(predicted)}")
    x = np.array([position[c] for c in reference])
    y = np.array([position[c] for c in predicted])
    k = len(categories)
    matrix = np.bincount(x * k + y, minlength=k * k).reshape(k, k)

    def kappa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return weighted_kappa(a, b, k)

    return {
        "categories": list(categories),
        "n": len(x),
        "confusion_matrix": matrix.tolist(),
        "accuracy": float(np.trace(matrix) / len(x)),
        "kappa_linear": float(kappa(x, y)),
        "bootstrap_ci": bootstrap_ci(kappa, x, y, resamples=resamples, seed=seed, level=level),
    }
