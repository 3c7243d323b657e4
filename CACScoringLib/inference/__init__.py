"""Segmentation inference: CT -> per-artery calcium label map (see pipeline.py)."""

from .pipeline import (
    Cancelled,
    Segmentation,
    auto_batch_size,
    load_models,
    segment,
    write_segmentation_outputs,
)
from .roi import RegionOfInterest, heart_roi_heuristic

__all__ = [
    "Cancelled",
    "RegionOfInterest",
    "Segmentation",
    "auto_batch_size",
    "heart_roi_heuristic",
    "load_models",
    "segment",
    "write_segmentation_outputs",
]
