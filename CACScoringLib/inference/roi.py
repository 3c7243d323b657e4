"""Heart region of interest (cascade step 1): the crop that makes CPU inference fast.

The anatomical heuristic works on a ~2 mm copy of the CT: lungs = large regions of lung density (the
field of view may cut the body, so they are not found as holes in it); per slice, the convex hull of the
lungs minus the lungs, soft tissue only, is the mediastinum; an in-plane opening detaches the great vessels
and the spine, leaving the heart as the largest component. Its bounding box plus a margin is the ROI.
Anything implausible falls back to the whole image with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..volume import CTVolume

ROI_MODES = ("auto", "heuristic", "whole")  # heart ROI model if the package has one, else the heuristic
HEURISTIC_SPACING_MM = 2.0
ROI_MARGIN_MM = 15.0  # the heart's anterior wall can sit slightly outside the lung hull
MIN_ROI_EXTENT_MM = 60.0  # smaller than any adult heart: the heuristic failed
LUNG_HU = (-970.0, -400.0)  # smoothed lung parenchyma; air outside the body is below
MIN_LUNG_ML = 50.0
SOFT_TISSUE_HU = (-200.0, 250.0)  # fat, blood, myocardium; bone and air excluded
HEART_OPENING_MM = 8.0


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


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of a 2D mask: pixels whose centre lies strictly inside the hull of its pixel corners.
    The outer corners of each row's two end pixels span the same hull as every pixel, and the hull is filled
    row by row from its half-planes: a few hundred points instead of skimage's test of every pixel."""
    from scipy.spatial import ConvexHull, QhullError

    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.zeros_like(mask)
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    corners = [np.stack([rows + dr, cols + dc], axis=1) for cols, dc in ((first, -0.5), (last, 0.5)) for dr in (-0.5, 0.5)]
    hull = np.zeros_like(mask)
    try:
        facets = ConvexHull(np.concatenate(corners)).equations  # interior: n_r * r + n_c * c + offset <= 0
    except QhullError:  # all in one row or column: the hull is the mask's extent
        hull[rows[0] : rows[-1] + 1, first.min() : last.max() + 1] = True
        return hull
    r = np.arange(rows[0], rows[-1] + 1, dtype=float)[:, None]
    n_r, n_c, offset = facets[:, 0], facets[:, 1], facets[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -(n_r * r + offset) / n_c  # where each facet's line crosses the row
    tolerance = 1e-9
    lo = np.where(n_c < -tolerance, bound, -np.inf).max(axis=1)
    hi = np.where(n_c > tolerance, bound, np.inf).min(axis=1)
    cols = np.arange(mask.shape[1])
    hull[rows[0] : rows[-1] + 1] = (cols > lo[:, None] + tolerance) & (cols < hi[:, None] - tolerance)
    return hull | mask


def heart_roi_heuristic(ct: CTVolume, margin_mm: float = ROI_MARGIN_MM) -> RegionOfInterest:
    spacing_zyx = (ct.spacing[2], ct.spacing[1], ct.spacing[0])
    steps = tuple(max(1, round(HEURISTIC_SPACING_MM / s)) for s in spacing_zyx)
    grid_mm = tuple(s * step for s, step in zip(spacing_zyx, steps, strict=True))
    # In-plane smoothing so noise does not decide between lung, air and soft tissue.
    small = ndimage.uniform_filter(ct.array[:: steps[0], :: steps[1], :: steps[2]], size=(1, 3, 3))
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)

    # Lungs by density, not as holes in the body: a cardiac field of view usually cuts the body, so the
    # lungs touch the image edge. Air outside the body (about -1000 HU) stays out.
    lungs = ndimage.binary_opening((small > LUNG_HU[0]) & (small < LUNG_HU[1]), structure=in_plane, iterations=2)
    components, count = ndimage.label(lungs)
    volume_ml = np.bincount(components.ravel()) * np.prod(grid_mm) / 1000.0
    lung_ids = [i for i in range(1, count + 1) if volume_ml[i] >= MIN_LUNG_ML]
    if not lung_ids:
        return whole_image(ct, "heart ROI: no lungs found; segmenting the whole image")
    lungs = np.isin(components, lung_ids)

    # The mediastinum lies inside the hull of the lungs; its soft tissue and fat (not bone) hold the heart.
    mediastinum = np.zeros_like(lungs)
    soft = (small > SOFT_TISSUE_HU[0]) & (small < SOFT_TISSUE_HU[1])
    for z in np.flatnonzero(lungs.any(axis=(1, 2))):
        mediastinum[z] = convex_hull_mask(lungs[z]) & ~lungs[z] & soft[z]
    # An opening of about HEART_OPENING_MM in every direction detaches the great vessels, oesophagus and
    # spine, leaving the heart as the largest blob (a diamond in-plane times a line in z: cheap and separable).
    # An opening never leaves the set it opens, so it runs on the mediastinum's bounding box only.
    box = ndimage.find_objects(mediastinum.view(np.uint8))
    if not box:
        return whole_image(ct, "heart ROI: no mediastinum between the lungs; segmenting the whole image")
    opened = mediastinum[box[0]]
    z_line = np.zeros((3, 3, 3), bool)
    z_line[:, 1, 1] = True
    radii = [(in_plane, round(HEART_OPENING_MM / grid_mm[1])), (z_line, round(HEART_OPENING_MM / grid_mm[0]))]
    for structure, radius in radii:
        if radius:
            opened = ndimage.binary_erosion(opened, structure, iterations=radius)
    for structure, radius in radii:
        if radius:
            opened = ndimage.binary_dilation(opened, structure, iterations=radius)
    components, count = ndimage.label(opened)
    if count == 0:
        return whole_image(ct, "heart ROI: no mediastinum between the lungs; segmenting the whole image")
    heart = np.zeros_like(mediastinum)
    heart[box[0]] = components == np.argmax(np.bincount(components.ravel())[1:]) + 1
    bounds = bounds_from_mask(heart, steps, ct, margin_mm)
    extent_y = (bounds[1][1] - bounds[1][0]) * ct.spacing[1]
    extent_x = (bounds[2][1] - bounds[2][0]) * ct.spacing[0]
    if min(extent_y, extent_x) < MIN_ROI_EXTENT_MM:
        return whole_image(ct, "heart ROI: region between the lungs implausibly small; segmenting the whole image")
    return RegionOfInterest(bounds, "heuristic")
