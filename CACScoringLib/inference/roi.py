"""Heart region of interest (cascade step 1): the crop that makes CPU inference fast, and the region outside
which nothing is labelled. The heuristic is anatomy.find_heart; anything implausible falls back to the whole
image with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..anatomy import HeartRegion, find_heart
from ..volume import CTVolume

ROI_MODES = ("auto", "heuristic", "whole")  # heart ROI model if the package has one, else the heuristic
ROI_MARGIN_MM = 5.0  # the region already holds the heart's surface; a little context for the network
MIN_ROI_EXTENT_MM = 60.0  # smaller than any adult heart: the heuristic failed


@dataclass
class RegionOfInterest:
    """Half-open voxel bounds ((z0, z1), (y0, y1), (x0, x1)) on the CT grid."""

    bounds: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    method: str  # "heuristic", "model" or "whole"
    warnings: list[str] = field(default_factory=list)
    heart: HeartRegion | None = None  # candidates mostly outside it are not coronary

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(lo, hi) for lo, hi in self.bounds)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(hi - lo for lo, hi in self.bounds)


def whole_image(ct: CTVolume, warning: str | None = None) -> RegionOfInterest:
    return RegionOfInterest(tuple((0, n) for n in ct.shape), "whole", [warning] if warning else [])


def bounds_from_mask(mask: np.ndarray, steps: tuple[int, int, int], ct: CTVolume, margin_mm: float) -> tuple:
    """Bounding box of a mask sampled every `steps` voxels, mapped to the CT grid with a margin in mm."""
    spacing_zyx = (ct.spacing[2], ct.spacing[1], ct.spacing[0])
    bounds = []
    for axis, (step, size, spacing) in enumerate(zip(steps, ct.shape, spacing_zyx, strict=True)):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        margin = int(np.ceil(margin_mm / spacing))
        lo = max(0, present[0] * step - margin)
        hi = min(size, (present[-1] + 1) * step + margin)
        bounds.append((int(lo), int(hi)))
    return tuple(bounds)


def heart_roi_heuristic(ct: CTVolume, margin_mm: float = ROI_MARGIN_MM) -> RegionOfInterest:
    heart, reason = find_heart(ct)
    if heart is None:
        return whole_image(ct, f"heart ROI: {reason}; segmenting the whole image")
    spacing_zyx = (ct.spacing[2], ct.spacing[1], ct.spacing[0])
    bounds = []
    for (lo, hi), size, spacing in zip(heart.bounds(), ct.shape, spacing_zyx, strict=True):
        margin = int(np.ceil(margin_mm / spacing))
        bounds.append((max(0, lo - margin), min(size, hi + margin)))
    extent_y = (bounds[1][1] - bounds[1][0]) * ct.spacing[1]
    extent_x = (bounds[2][1] - bounds[2][0]) * ct.spacing[0]
    if min(extent_y, extent_x) < MIN_ROI_EXTENT_MM:
        return whole_image(ct, "heart ROI: region between the lungs implausibly small; segmenting the whole image")
    return RegionOfInterest(tuple(bounds), "heuristic", heart=heart)
