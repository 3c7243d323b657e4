"""Agatston, volume and mass scoring (see engine.py for the definitions)."""

from .calibration import MassCalibration, calibrated_params, calibration_factor_from_rois
from .categories import RISK_CATEGORIES, cac_drs, risk_category
from .engine import (
    NOT_VALID_ON_CONTRAST,
    ArteryScore,
    IncrementalScorer,
    Lesion,
    ScoreResult,
    check_contrast,
    check_labels,
    score_volume,
)
from .params import PRESETS, SLICE_NORMALIZATIONS, ScoringParams, kvp_hu_scale, preset

__all__ = [
    "NOT_VALID_ON_CONTRAST",
    "PRESETS",
    "RISK_CATEGORIES",
    "SLICE_NORMALIZATIONS",
    "ArteryScore",
    "IncrementalScorer",
    "Lesion",
    "MassCalibration",
    "ScoreResult",
    "ScoringParams",
    "cac_drs",
    "calibrated_params",
    "calibration_factor_from_rois",
    "check_contrast",
    "check_labels",
    "kvp_hu_scale",
    "preset",
    "risk_category",
    "score_volume",
]
