"""Losses by name (Tversky alpha semantics and batch Dice checked by hand) and seed 000's multiplicative
ensemble rule."""

import math

import pytest
import torch

from CACScoringLib.inference.ensemble import multiplicative_ensemble, multiplicative_scores
from CACScoringLib.training.config import DEFAULTS
from CACScoringLib.training.losses import build_loss


def _logits(foreground_prob):
    """Two-class logits (0, logit p): both softmax and a sigmoid of class 1 give exactly p; shape (1, 2, 1, n)."""
    p = torch.tensor(foreground_prob, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))])[None, :, None, :]


TARGET = torch.tensor([1, 1, 0, 0])[None, None, None, :]  # (1, 1, 1, 4)
PROB = [0.9, 0.6, 0.7, 0.2]
# TP = 0.9 + 0.6 = 1.5; FP = 0.7 + 0.2 = 0.9; FN = 0.1 + 0.4 = 0.5


@pytest.mark.parametrize(
    "alpha, beta, expected", [(0.9, 0.1, 1 - 1.5 / (1.5 + 0.81 + 0.05)), (0.1, 0.9, 1 - 1.5 / (1.5 + 0.09 + 0.45))]
)
def test_tversky_alpha_weighs_false_positives(alpha, beta, expected):
    loss = build_loss({**DEFAULTS["loss"], "name": "tversky", "alpha": alpha, "beta": beta})
    # MONAI adds 1e-5 smoothing to numerator and denominator.
    assert float(loss(_logits(PROB), TARGET)) == pytest.approx(expected, abs=1e-5)


def test_tversky_swapping_alpha_and_beta_changes_the_loss_as_fp_exceed_fn():
    def tversky(alpha, beta):
        return float(build_loss({**DEFAULTS["loss"], "name": "tversky", "alpha": alpha, "beta": beta})(_logits(PROB), TARGET))

    assert tversky(0.9, 0.1) > tversky(0.5, 0.5) > tversky(0.1, 0.9)  # FP 0.9 > FN 0.5


def test_bce_is_binary_cross_entropy_of_the_foreground_channel():
    loss = build_loss({**DEFAULTS["loss"], "name": "bce"})
    expected = -(math.log(0.9) + math.log(0.6) + math.log(1 - 0.7) + math.log(1 - 0.2)) / 4
    assert float(loss(_logits(PROB), TARGET)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["dice", "dice_ce", "dice_focal", "focal"])
def test_other_losses_prefer_the_right_answer(name):
    loss = build_loss({**DEFAULTS["loss"], "name": name})
    assert float(loss(_logits([0.95, 0.9, 0.05, 0.1]), TARGET)) < float(loss(_logits([0.1, 0.05, 0.9, 0.95]), TARGET))


def test_multiplicative_ensemble_rule():
    tversky = torch.tensor([[[0.8, 0.9]], [[0.6, 0.1]]]).reshape(1, 2, 1, 2)
    baseline = torch.tensor([[[0.5, 1.0]], [[1.0, 0.2]]]).reshape(1, 2, 1, 2)
    image = torch.tensor([0.5, 1.5]).reshape(1, 1, 1, 2)  # clamped to 1 where above
    expected = torch.tensor([0.8 * 0.25 * 0.5, 0.9 * 1.0 * 1.0, 0.6 * 1.0 * 0.5, 0.1 * 0.04 * 1.0]).reshape(2, 1, 2)
    assert torch.allclose(multiplicative_ensemble(tversky, baseline, image)[0], expected)


def test_multiplicative_scores_put_one_minus_the_best_artery_in_the_background_channel():
    # Classes: background, LM, LAD; pixel 0 -> LAD scores 0.9*0.81*1 = 0.729, pixel 1 -> best 0.7*0.36 = 0.252.
    tversky = torch.tensor([[0.0, 0.3], [0.2, 0.6], [0.9, 0.7]]).reshape(1, 3, 1, 2)
    baseline = torch.tensor([[0.0, 0.3], [0.5, 0.5], [0.9, 0.6]]).reshape(1, 3, 1, 2)
    scores = multiplicative_scores(tversky, baseline, torch.ones(1, 1, 1, 2))
    expected = torch.tensor([[1 - 0.729, 1 - 0.252], [0.05, 0.15], [0.729, 0.252]]).reshape(1, 3, 1, 2)
    assert torch.allclose(scores, expected, atol=1e-6)


def test_batch_dice_pools_the_batch_so_a_patch_without_the_class_rewards_nothing():
    # Item 1 has foreground and the network finds half of it; item 2 has none and the network predicts none.
    prob = [[0.5, 0.5, 0.01, 0.01], [0.01, 0.01, 0.01, 0.01]]
    target = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])[:, None, None, :]
    logits = torch.cat([_logits(p) for p in prob])
    tp = 0.5 + 0.5
    fp = 0.01 * 6
    fn = 0.5 + 0.5
    pooled = 1 - 2 * tp / (2 * tp + fp + fn)
    per_item = ((1 - 2 * tp / (2 * tp + 0.02 + fn)) + (1 - 1e-5 / (0.04 + 1e-5))) / 2
    batch = build_loss({**DEFAULTS["loss"], "name": "dice", "batch": True})
    plain = build_loss({**DEFAULTS["loss"], "name": "dice"})
    assert float(batch(logits, target)) == pytest.approx(pooled, abs=1e-4)
    assert float(plain(logits, target)) == pytest.approx(per_item, abs=1e-4)
