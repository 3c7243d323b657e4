"""Anatomy found in the CT itself (numpy and scipy only): the heart region, the blood pool and what surrounds a
calcification."""

from .heart import ContrastAssessment, HeartRegion, assess_contrast, convex_hull_mask, find_heart
from .surroundings import MAX_AERATED_SHARE, aerated_share

__all__ = [
    "MAX_AERATED_SHARE",
    "ContrastAssessment",
    "HeartRegion",
    "aerated_share",
    "assess_contrast",
    "convex_hull_mask",
    "find_heart",
]
