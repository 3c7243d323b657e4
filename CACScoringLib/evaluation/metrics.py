"""Voxel overlap metrics per artery and for the coronary foreground.

Counts come from one pass over the two label maps (a joint histogram of reference and predicted label);
the ratios follow MONAI's confusion-matrix metrics (computed here in plain Python: no torch on this path).

Conventions for empty sets (TP, FP, FN voxel counts):
    Dice = F1 = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN), precision = TP / (TP + FP),
    recall = TP / (TP + FN).
    - reference and prediction both empty: Dice, IoU and F1 are 1.0 (perfect agreement on "no calcium");
      precision and recall are undefined (NaN).
    - only the prediction empty: Dice, IoU, F1, recall 0.0; precision NaN (nothing was predicted).
    - only the reference empty: Dice, IoU, F1, precision 0.0; recall NaN (there was nothing to find).
NaN values stay out of means over cases; pooled metrics (counts summed over cases) avoid most of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..labels import ARTERIES, LABEL_ID, MAX_LABEL

FOREGROUND = "coronary"  # all arteries together: label > 0 in both maps, whatever the artery
METRIC_NAMES = ("dice", "iou", "precision", "recall", "f1")
_SLAB_SLICES = 16


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


@dataclass(frozen=True)
class OverlapCounts:
    tp: int
    fp: int
    fn: int

    def __add__(self, other: OverlapCounts) -> OverlapCounts:
        return OverlapCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def metrics(self) -> dict[str, float]:
        """Dice, IoU, precision, recall and F1 with the conventions of this module's docstring."""
        tp, fp, fn = self.tp, self.fp, self.fn
        both_empty = tp + fp + fn == 0
        f1 = 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn)
        return {
            "dice": f1,
            "iou": 1.0 if both_empty else tp / (tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": f1,
        }

    def to_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn}


def joint_histogram(reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """(MAX_LABEL+1)² voxel counts: entry [r, p] = voxels labelled r in the reference and p in the prediction."""
    if reference.shape != prediction.shape:
        raise InputError(
            f"predicted label map shape {prediction.shape} differs from the reference {reference.shape}: "
            "compare label maps on the same image grid"
        )
    size = MAX_LABEL + 1
    for name, labels in (("reference", reference), ("predicted", prediction)):
        if labels.size and (labels.min() < 0 or labels.max() > MAX_LABEL):
            raise InputError(f"{name} label map has values outside 0-{MAX_LABEL} (0 bg, 1 LM, 2 LAD, 3 LCX, 4 RCA)")
    histogram = np.zeros(size * size, dtype=np.int64)
    # slabs of slices keep the integer temporaries small on full-size CTs
    for start in range(0, reference.shape[0], _SLAB_SLICES):
        pair = reference[start : start + _SLAB_SLICES].astype(np.intp) * size
        pair += prediction[start : start + _SLAB_SLICES]
        histogram += np.bincount(pair.ravel(), minlength=size * size)
    return histogram.reshape(size, size)


def overlap_counts(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray | None = None) -> dict[str, OverlapCounts]:
    """TP/FP/FN voxel counts per artery key and for FOREGROUND (any artery label in both maps).

    `mask` (bool, same shape) restricts the comparison, e.g. to calcium voxels (HU >= threshold).
    """
    if mask is not None:
        reference = np.where(mask, reference, 0)
        prediction = np.where(mask, prediction, 0)
    joint = joint_histogram(reference, prediction)
    counts = {}
    for key in ARTERIES:
        i = LABEL_ID[key]
        tp = int(joint[i, i])
        counts[key] = OverlapCounts(tp=tp, fp=int(joint[:, i].sum()) - tp, fn=int(joint[i, :].sum()) - tp)
    tp = int(joint[1:, 1:].sum())
    counts[FOREGROUND] = OverlapCounts(tp=tp, fp=int(joint[0, 1:].sum()), fn=int(joint[1:, 0].sum()))
    return counts


def voxel_metrics(reference: np.ndarray, prediction: np.ndarray, mask: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Dice, IoU, precision, recall, F1 per artery key and for FOREGROUND."""
    return {key: counts.metrics() for key, counts in overlap_counts(reference, prediction, mask).items()}
