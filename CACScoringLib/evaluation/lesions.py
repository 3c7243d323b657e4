"""Lesion-level detection in the manner of the orCaScore framework (Wolterink et al., Med Phys 2016).

A lesion is a 26-connected 3D component of calcium voxels (HU >= threshold) carrying one artery label, in
the reference and in the prediction separately. The matching rule:

- a reference lesion is *detected* when at least one of its voxels is also predicted calcium;
  FN = reference lesions with no such voxel;
- a predicted lesion is *true* when at least one of its voxels is also reference calcium;
  FP = predicted lesions with no such voxel.

Sensitivity = detected / reference lesions, PPV = true / predicted lesions, F1 = their harmonic mean.
Counting TP on each side separately keeps both ratios within [0, 1] when one reference lesion is split
into several predicted ones (or the reverse). The same ratios by volume weigh each lesion by its volume
(mm³): sensitivity = volume of detected reference lesions / reference lesion volume, and so on.

Variants (keys of `lesion_counts`):
- artery key (LM, LAD, LCX, RCA): both lesions carry that artery's label (overlap must be same-artery);
- ALL_ARTERIES: the per-artery counts summed (artery-specific detection over the whole tree);
- FOREGROUND ("coronary"): lesions of any artery label, artery ignored (was coronary calcium found?).

Empty sets: no reference and no predicted lesions gives F1 1.0 and sensitivity/PPV NaN; lesions on one
side only give F1 0.0, the ratio over the empty side NaN and the other 0.0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..labels import ARTERIES, LABEL_ID
from ..scoring.params import STANDARD_THRESHOLD_HU
from .metrics import FOREGROUND, joint_histogram

ALL_ARTERIES = "all_arteries"
LESION_METRIC_NAMES = ("sensitivity", "ppv", "f1", "sensitivity_volume", "ppv_volume", "f1_volume")
_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def _f1(sensitivity: float, ppv: float, reference_empty: bool, prediction_empty: bool) -> float:
    if reference_empty and prediction_empty:
        return 1.0
    if reference_empty or prediction_empty or sensitivity + ppv == 0:
        return 0.0
    return 2 * sensitivity * ppv / (sensitivity + ppv)


@dataclass(frozen=True)
class LesionCounts:
    reference: int = 0  # reference lesions
    detected: int = 0  # reference lesions overlapping predicted calcium
    predicted: int = 0  # predicted lesions
    true: int = 0  # predicted lesions overlapping reference calcium
    reference_mm3: float = 0.0
    detected_mm3: float = 0.0
    predicted_mm3: float = 0.0
    true_mm3: float = 0.0

    @property
    def false_negatives(self) -> int:
        return self.reference - self.detected

    @property
    def false_positives(self) -> int:
        return self.predicted - self.true

    def __add__(self, other: LesionCounts) -> LesionCounts:
        return LesionCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def metrics(self) -> dict[str, float]:
        sensitivity = _ratio(self.detected, self.reference)
        ppv = _ratio(self.true, self.predicted)
        sensitivity_volume = _ratio(self.detected_mm3, self.reference_mm3)
        ppv_volume = _ratio(self.true_mm3, self.predicted_mm3)
        no_reference, no_prediction = self.reference == 0, self.predicted == 0
        return {
            "sensitivity": sensitivity,
            "ppv": ppv,
            "f1": _f1(sensitivity, ppv, no_reference, no_prediction),
            "sensitivity_volume": sensitivity_volume,
            "ppv_volume": ppv_volume,
            "f1_volume": _f1(sensitivity_volume, ppv_volume, no_reference, no_prediction),
        }

    def to_dict(self) -> dict:
        counts = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**counts, "false_negatives": self.false_negatives, "false_positives": self.false_positives}


def match_lesions(
    reference: np.ndarray, prediction: np.ndarray, voxel_volume_mm3: float, min_voxels: int = 1
) -> LesionCounts:
    """Match the 26-connected lesions of two boolean calcium masks by overlap (rule in the module docstring).

    Lesions of fewer than `min_voxels` voxels are ignored on both sides, also as overlap partners.
    """
    sides = []
    for mask in (reference, prediction):
        components, count = ndimage.label(mask, structure=_CONNECTIVITY_26)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        kept = sizes >= min_voxels
        kept[0] = False  # background
        sides.append((components, sizes, kept))
    overlap = np.logical_and(*(kept[components] for components, _, kept in sides))
    counts = []
    for components, sizes, kept in sides:
        hit = np.zeros_like(kept)
        hit[components[overlap]] = True
        counts += [int(kept.sum()), int(hit.sum())]
        counts += [float(sizes[kept].sum() * voxel_volume_mm3), float(sizes[hit].sum() * voxel_volume_mm3)]
    n_ref, n_detected, ref_mm3, detected_mm3, n_pred, n_true, pred_mm3, true_mm3 = counts
    return LesionCounts(n_ref, n_detected, n_pred, n_true, ref_mm3, detected_mm3, pred_mm3, true_mm3)


def _calcium_box(calcium: np.ndarray, reference: np.ndarray, prediction: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of labelled calcium in either map: components never leave it, and it is small."""
    labelled = calcium & ((reference > 0) | (prediction > 0))
    boxes = ndimage.find_objects(labelled.astype(np.uint8))
    return boxes[0] if boxes else tuple(slice(0, 0) for _ in calcium.shape)


def lesion_counts(
    hu: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    voxel_volume_mm3: float,
    threshold_hu: float = STANDARD_THRESHOLD_HU,
    min_voxels: int = 1,
) -> dict[str, LesionCounts]:
    """Lesion counts per artery key, ALL_ARTERIES and FOREGROUND for one case (label maps on the CT grid)."""
    joint_histogram(reference, prediction)  # validates shapes and label values
    if hu.shape != reference.shape:
        raise InputError(f"label maps {reference.shape} and CT {hu.shape} differ in shape: use labels of this CT")
    calcium = hu >= threshold_hu
    box = _calcium_box(calcium, reference, prediction)
    calcium, reference, prediction = calcium[box], reference[box], prediction[box]
    counts = {}
    for key in ARTERIES:
        label = LABEL_ID[key]
        counts[key] = match_lesions(calcium & (reference == label), calcium & (prediction == label), voxel_volume_mm3, min_voxels)
    counts[ALL_ARTERIES] = sum((counts[key] for key in ARTERIES), LesionCounts())
    counts[FOREGROUND] = match_lesions(calcium & (reference > 0), calcium & (prediction > 0), voxel_volume_mm3, min_voxels)
    return counts
