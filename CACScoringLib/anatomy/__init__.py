"""Anatomy found in the CT itself (numpy and scipy only): the heart region and the blood pool."""

from .heart import ContrastAssessment, HeartRegion, assess_contrast, convex_hull_mask, find_heart

__all__ = ["ContrastAssessment", "HeartRegion", "assess_contrast", "convex_hull_mask", "find_heart"]
