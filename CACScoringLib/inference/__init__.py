"""Segmentation inference: CT -> per-artery calcium label map (see pipeline.py).

Names load on first use: the ROI modes and heuristics must not import torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "Cancelled": ".pipeline",
    "RegionOfInterest": ".roi",
    "Segmentation": ".pipeline",
    "auto_batch_size": ".pipeline",
    "heart_roi_heuristic": ".roi",
    "load_models": ".pipeline",
    "segment": ".pipeline",
    "write_segmentation_outputs": ".pipeline",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
