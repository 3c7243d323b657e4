"""Heart region of interest (cascade step 1): the crop that makes CPU inference fast.

The anatomical heuristic works on a ~2 mm copy of the CT: body = largest component above -500 HU (holes
filled slice by slice); lungs = air inside the body; per slice, the convex hull of the lungs minus the lungs
is the mediastinum, whose soft tissue holds the heart. Its bounding box (slices with lungs only, i.e. above
the diaphragm) plus a margin is the ROI. Anything implausible falls back to the whole image with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..volume import CTVolume

HEURISTIC_SPACING_MM = 2.0
ROI_MARGIN_MM = 15.0  # the heart's anterior wall can sit slightly outside the lung hull
MIN_ROI_EXTENT_MM = 60.0  # smaller than any adult heart: the heuristic failed


@dataclass
class RegionOfInterest:
    """Half-open voxel bounds ((z0, z1), (y0, y1), (x0, x1)) on the CT grid."""

    bounds: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    method: str  # "heuristic", "model" or "whole"
    warnings: list[str] = field(default_factory=list)

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
    from skimage.morphology import convex_hull_image

    spacing_zyx = (ct.spacing[2], ct.spacing[1], ct.spacing[0])
    steps = tuple(max(1, int(HEURISTIC_SPACING_MM // s)) for s in spacing_zyx)
    small = ct.array[:: steps[0], :: steps[1], :: steps[2]]
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)

    body, count = ndimage.label(small > -500)
    if count == 0:
        return whole_image(ct, "heart ROI: no body found (is this a CT in HU?); segmenting the whole image")
    body = body == np.argmax(np.bincount(body.ravel())[1:]) + 1
    body = ndimage.binary_fill_holes(body, structure=in_plane)
    lungs = ndimage.binary_opening((small < -400) & body, structure=in_plane)
    lung_area = lungs.sum(axis=(1, 2))
    body_area = np.maximum(body.sum(axis=(1, 2)), 1)
    lung_slices = lung_area >= 0.02 * body_area
    if lung_slices.sum() == 0:
        return whole_image(ct, "heart ROI: no lungs found; segmenting the whole image")

    mediastinum = np.zeros_like(lungs)
    for z in np.flatnonzero(lung_slices):
        hull = convex_hull_image(lungs[z])
        mediastinum[z] = hull & ~lungs[z] & body[z] & (small[z] > -200)
    components, count = ndimage.label(mediastinum)
    if count == 0:
        return whole_image(ct, "heart ROI: no mediastinum between the lungs; segmenting the whole image")
    mediastinum = components == np.argmax(np.bincount(components.ravel())[1:]) + 1
    bounds = bounds_from_mask(mediastinum, steps, ct, margin_mm)
    extent_y = (bounds[1][1] - bounds[1][0]) * ct.spacing[1]
    extent_x = (bounds[2][1] - bounds[2][0]) * ct.spacing[0]
    if min(extent_y, extent_x) < MIN_ROI_EXTENT_MM:
        return whole_image(ct, "heart ROI: region between the lungs implausibly small; segmenting the whole image")
    return RegionOfInterest(bounds, "heuristic")
