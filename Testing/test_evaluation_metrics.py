"""Voxel overlap metrics: hand-counted cases, the empty-set conventions, and MONAI's Dice as a cross-check."""

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot

from CACScoringLib.errors import InputError
from CACScoringLib.evaluation.metrics import FOREGROUND, OverlapCounts, overlap_counts, voxel_metrics
from CACScoringLib.labels import ARTERIES, LABEL_ID

torch.set_num_threads(1)


def _line(values):
    return np.array(values, dtype=np.uint8).reshape(1, 1, -1)


def test_hand_counted_per_artery_and_foreground():
    lm, lad, lcx, rca = (LABEL_ID[k] for k in ("LM", "LAD", "LCX", "RCA"))
    reference = _line([lm, lm, lm, lad, lad, 0, 0, lcx, 0, 0])
    predicted = _line([lm, lm, 0, lad, 0, lad, 0, 0, rca, 0])
    counts = overlap_counts(reference, predicted)
    assert counts["LM"] == OverlapCounts(tp=2, fp=0, fn=1)
    assert counts["LAD"] == OverlapCounts(tp=1, fp=1, fn=1)
    assert counts["LCX"] == OverlapCounts(tp=0, fp=0, fn=1)
    assert counts["RCA"] == OverlapCounts(tp=0, fp=1, fn=0)
    # foreground ignores the artery: positions 0, 1, 3 agree; 5, 8 only predicted; 2, 4, 7 only reference
    assert counts[FOREGROUND] == OverlapCounts(tp=3, fp=2, fn=3)

    metrics = voxel_metrics(reference, predicted)
    assert metrics["LM"] == pytest.approx({"dice": 0.8, "iou": 2 / 3, "precision": 1.0, "recall": 2 / 3, "f1": 0.8})
    assert metrics["LAD"] == pytest.approx({"dice": 0.5, "iou": 1 / 3, "precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert metrics[FOREGROUND]["dice"] == pytest.approx(6 / 11)
    assert metrics[FOREGROUND]["iou"] == pytest.approx(3 / 8)


def test_empty_conventions():
    lcx, rca = LABEL_ID["LCX"], LABEL_ID["RCA"]
    reference = _line([lcx, 0, 0])
    predicted = _line([0, 0, rca])
    metrics = voxel_metrics(reference, predicted)
    # nothing anywhere: agreement on absence
    assert metrics["LM"]["dice"] == metrics["LM"]["iou"] == metrics["LM"]["f1"] == 1.0
    assert math.isnan(metrics["LM"]["precision"]) and math.isnan(metrics["LM"]["recall"])
    # reference only: missed everything, precision undefined
    assert metrics["LCX"]["dice"] == metrics["LCX"]["iou"] == metrics["LCX"]["recall"] == 0.0
    assert math.isnan(metrics["LCX"]["precision"])
    # prediction only: all wrong, recall undefined
    assert metrics["RCA"]["dice"] == metrics["RCA"]["precision"] == 0.0
    assert math.isnan(metrics["RCA"]["recall"])


def test_dice_matches_monai_compute_dice_on_random_maps():
    rng = np.random.default_rng(7)
    reference = rng.choice(5, size=(40, 12, 12), p=[0.6, 0.1, 0.1, 0.1, 0.1]).astype(np.uint8)  # > one slab
    predicted = np.where(rng.random(reference.shape) < 0.3, rng.integers(0, 5, reference.shape), reference)
    metrics = voxel_metrics(reference, predicted.astype(np.uint8))

    def hot(labels):
        return one_hot(torch.as_tensor(labels[None, None].astype(np.int64)), num_classes=5, dim=1)

    monai_dice = compute_dice(hot(predicted), hot(reference), include_background=False)[0]
    for key in ARTERIES:
        assert metrics[key]["dice"] == pytest.approx(float(monai_dice[LABEL_ID[key] - 1]))
        # IoU = Dice / (2 - Dice) for any pair of sets
        assert metrics[key]["iou"] == pytest.approx(metrics[key]["dice"] / (2 - metrics[key]["dice"]))


def test_mask_restricts_the_comparison():
    lad = LABEL_ID["LAD"]
    reference = _line([lad, lad, lad, 0])
    predicted = _line([lad, 0, 0, lad])
    mask = _line([1, 1, 0, 0]).astype(bool)
    assert overlap_counts(reference, predicted, mask)["LAD"] == OverlapCounts(tp=1, fp=0, fn=1)


def test_pooled_counts_add():
    assert OverlapCounts(1, 2, 3) + OverlapCounts(10, 20, 30) == OverlapCounts(11, 22, 33)


def test_bad_input_raises_input_error():
    with pytest.raises(InputError, match="differs from the reference"):
        overlap_counts(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(InputError, match="outside 0-4"):
        overlap_counts(np.zeros((1, 1, 2), np.uint8), _line([0, 7]))
