"""The heart region of a CT of any field of view (gated cardiac, whole chest from neck to abdomen, partial),
and the blood pool HU that tells a contrast-enhanced scan.

On a ~2 mm copy of the CT: lungs are large regions of lung density that are not the air around the body (a
cardiac field of view cuts the body, so the lungs may touch the image edge); per slice, the mediastinum is
the convex hull of the lungs minus the lungs, tissue from fat to contrast blood, without bone and in front
of the vertebral body. An in-plane opening detaches the great vessels, hila and oesophagus, and the largest
piece left is the heart's cross-section. It is followed from the slice where it is largest (among slices
where the lungs are large, in their lower two thirds, which excludes the neck, and not much larger than the slice above) upwards while it stays large, which ends at the aortic
root and pulmonary trunk, and downwards within a little more than the cross-section above, until it shrinks
away or most of the piece lies outside that (the liver joining it below the inferior wall). The region is those cross-sections, filled, widened in-plane and in z by margins that hold
the coronary arteries on the heart's surface, and cut at the vertebral body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..volume import CTVolume

GRID_MM = 2.0
LUNG_HU = (-970.0, -400.0)  # smoothed lung parenchyma; air around the body is below
MIN_LUNG_ML = 50.0
MIN_LUNG_SHARE = 0.1  # of the largest lung component: smaller air pockets (bowel, table) are not lung
TISSUE_HU = (-200.0, 700.0)  # fat, myocardium and blood, contrast-enhanced blood too
BONE_HU = 500.0  # cortical bone and metal (the densest voxel of a 2 mm block: thin cortex counts)
HEART_OPENING_MM = 10.0
LARGE_LUNG_SHARE = 0.5  # the heart's widest slice lies where the lungs are at least this large
HEART_LUNG_LEVEL = 2 / 3  # and in the lower two thirds of the lungs' height, below the apices
UP_MIN_AREA = 0.45  # of the widest cross-section; above, the great vessels part
DOWN_MIN_AREA = 0.15
DOWN_MAX_GROWTH = 1.2  # a slice this much wider than the one above has the liver joined
MIN_SPINE_MM2 = 400.0  # a vertebral body is over 1000 mm² in cross-section
MIN_OVERLAP = 0.5  # of the smaller of two consecutive cross-sections
MARGIN_MM = 12.0  # in-plane: epicardial fat and the coronary arteries on the heart's surface
TOP_MARGIN_MM = 15.0  # the aortic root with the coronary ostia
BOTTOM_MARGIN_MM = 25.0  # the inferior wall where the liver joins it
BLOOD_POOL_CORE_MM = 6.0  # erosion that leaves blood and myocardium, not the epicardial fat
CONTRAST_THRESHOLD_HU = 150.0  # non-contrast blood is 30-60 HU; enhanced blood pools are 200-500 HU


@dataclass
class HeartRegion:
    """The heart region on a coarse grid: voxel (z, y, x) of the CT lies in coarse voxel (z, y, x) // steps."""

    mask: np.ndarray  # bool, coarse grid
    steps: tuple[int, int, int]
    ct_shape: tuple[int, int, int]
    blood_pool_hu: float | None
    warnings: list[str] = field(default_factory=list)

    def on_ct_grid(self, z0: int = 0, z1: int | None = None) -> np.ndarray:
        """The mask on the CT grid for slices z0..z1 (all by default)."""
        z1 = self.ct_shape[0] if z1 is None else z1
        rows = [np.arange(0, n) // s for n, s in zip(self.ct_shape, self.steps, strict=True)]
        rows[0] = np.arange(z0, z1) // self.steps[0]
        limits = self.mask.shape
        z, y, x = (np.minimum(r, limit - 1) for r, limit in zip(rows, limits, strict=True))
        return self.mask[np.ix_(z, y, x)]

    def bounds(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """Half-open bounding box on the CT grid."""
        result = []
        for axis, (step, size) in enumerate(zip(self.steps, self.ct_shape, strict=True)):
            present = np.flatnonzero(self.mask.any(axis=tuple(a for a in range(3) if a != axis)))
            result.append((int(present[0] * step), int(min(size, (present[-1] + 1) * step))))
        return tuple(result)

    def clear_outside(self, labels: np.ndarray, depth: int = 16) -> int:
        """Set `labels` (on the CT grid) to 0 outside the region, in place; returns how many voxels it cleared."""
        cleared = 0
        for z0 in range(0, labels.shape[0], depth):
            slab = labels[z0 : z0 + depth]
            outside = slab.astype(bool) & ~self.on_ct_grid(z0, z0 + slab.shape[0])
            cleared += int(outside.sum())
            slab[outside] = 0
        return cleared

    def share_inside(self, components: np.ndarray, count: int, depth: int = 16) -> np.ndarray:
        """(count + 1,) share of each component's voxels that lie in the region."""
        inside = np.zeros(count + 1)
        total = np.zeros(count + 1)
        for z0 in range(0, components.shape[0], depth):
            slab = components[z0 : z0 + depth]
            total += np.bincount(slab.ravel(), minlength=count + 1)
            inside += np.bincount(slab[self.on_ct_grid(z0, z0 + slab.shape[0])], minlength=count + 1)
        return inside / np.maximum(total, 1)


@dataclass
class ContrastAssessment:
    blood_pool_hu: float | None  # None: no heart found to measure
    threshold_hu: float
    enhanced: bool

    def warning(self) -> str | None:
        if self.enhanced:
            return (
                f"contrast-enhanced CT: the blood pool measures {self.blood_pool_hu:.0f} HU (> {self.threshold_hu:g} HU); "
                "Agatston scoring is defined on non-contrast CT only, so the scores and the risk category are not "
                "valid (override with --contrast-threshold-hu)"
            )
        if self.blood_pool_hu is None:
            return "blood pool not measured (no heart found): cannot tell whether the CT is contrast-enhanced"
        return None

    def to_dict(self) -> dict:
        return {"blood_pool_hu": self.blood_pool_hu, "threshold_hu": self.threshold_hu, "enhanced": self.enhanced}


def assess_contrast(
    ct: CTVolume,
    threshold_hu: float = CONTRAST_THRESHOLD_HU,
    heart: HeartRegion | None = None,
    blood_pool_hu: float | None = None,
) -> ContrastAssessment:
    """Blood pool HU against the threshold; pass the heart region, or the blood pool HU, when already found."""
    if blood_pool_hu is None:
        if heart is None:
            heart, _ = find_heart(ct)
        blood_pool_hu = None if heart is None else heart.blood_pool_hu
    enhanced = blood_pool_hu is not None and blood_pool_hu > threshold_hu
    return ContrastAssessment(blood_pool_hu, float(threshold_hu), enhanced)


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


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def _lungs(small: np.ndarray, grid_mm: tuple[float, float, float]) -> np.ndarray:
    """Lung-density regions that are not air around the body: per slice, a low-density region touching the
    image edge is outside air when its median is air (clothing and blankets join it), else a lung cut by the
    field of view."""
    low = (small < LUNG_HU[1]) & (small > -1100.0)
    outside = np.zeros_like(low)
    for z in range(low.shape[0]):
        regions, count = ndimage.label(low[z])
        if not count:
            continue
        edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
        edge = edge[edge > 0]
        if len(edge):
            medians = np.atleast_1d(ndimage.median(small[z], regions, edge))
            outside[z] = np.isin(regions, edge[medians < LUNG_HU[0]])
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    lungs = ndimage.binary_opening(low & ~outside, structure=in_plane, iterations=2)
    components, count = ndimage.label(lungs)
    volume_ml = np.bincount(components.ravel()) * np.prod(grid_mm) / 1000.0
    volume_ml[0] = 0.0
    keep = np.flatnonzero(volume_ml >= max(MIN_LUNG_ML, MIN_LUNG_SHARE * volume_ml.max()))
    return np.isin(components, keep) if len(keep) else np.zeros_like(lungs)


def _block_max(hu: np.ndarray, steps: tuple[int, int, int]) -> np.ndarray:
    """Densest voxel of each coarse block, on the grid of hu[::steps]: thin cortical bone survives."""
    sz, sy, sx = steps
    ny, nx = -(-hu.shape[1] // sy), -(-hu.shape[2] // sx)
    out = np.empty((-(-hu.shape[0] // sz), ny, nx), np.float32)
    for z in range(out.shape[0]):
        block = np.full((ny * sy, nx * sx), -1024.0, np.float32)
        block[: hu.shape[1], : hu.shape[2]] = hu[z * sz : (z + 1) * sz].max(axis=0)
        out[z] = block.reshape(ny, sy, nx, sx).max(axis=(1, 3))
    return out


def _filled(bone_z: np.ndarray) -> np.ndarray:
    return ndimage.binary_fill_holes(ndimage.binary_dilation(bone_z))


def _mediastinum(small: np.ndarray, dense: np.ndarray, lungs_z: np.ndarray, min_spine_pixels: int) -> np.ndarray:
    """One slice: tissue inside the lungs' hull, without bone (cortex filled) and in front of the vertebral body."""
    hull = convex_hull_mask(lungs_z)
    bone = _filled(dense)
    tissue = hull & ~lungs_z & (small > TISSUE_HU[0]) & (small < TISSUE_HU[1]) & ~ndimage.binary_dilation(bone)
    spine = _spine(bone, hull, min_spine_pixels)
    if spine is not None:  # the heart lies in front of the vertebral body
        tissue[np.flatnonzero(spine.any(axis=1)).min() :] = False
    return tissue


def _spine(bone: np.ndarray, hull: np.ndarray, min_pixels: int) -> np.ndarray | None:
    """The vertebral body (with its posterior elements): the largest bone behind the hull's centre and in its
    middle third (the hull may stop short of the spine, so bone outside it counts); calcium is too small."""
    pieces, count = ndimage.label(bone)
    if not count:
        return None
    rows, cols = np.nonzero(hull)
    centres = np.array(ndimage.center_of_mass(bone, pieces, range(1, count + 1)))
    sizes = np.bincount(pieces.ravel())[1:]
    middle, width = (cols.min() + cols.max()) / 2, cols.max() - cols.min()
    spine_like = (
        (centres[:, 0] > (rows.min() + rows.max()) / 2) & (np.abs(centres[:, 1] - middle) < width / 6) & (sizes >= min_pixels)
    )
    if not spine_like.any():
        return None
    return pieces == np.flatnonzero(spine_like)[sizes[spine_like].argmax()] + 1


def _cross_sections(tissue: np.ndarray, radius: int) -> np.ndarray:
    """Per slice, the largest piece of the opened mediastinal tissue."""
    pieces = np.zeros_like(tissue)
    for z in np.flatnonzero(tissue.any(axis=(1, 2))):
        labelled, count = ndimage.label(ndimage.binary_opening(tissue[z], structure=_disk(radius)))
        if count:
            sizes = np.bincount(labelled.ravel())
            sizes[0] = 0
            pieces[z] = labelled == sizes.argmax()
    return pieces


def _between_lungs(piece: np.ndarray, lungs_z: np.ndarray) -> bool:
    """Lung on both sides of the piece at its rows: the heart's widest slice is, the liver dome is not."""
    if not piece.any():
        return False
    rows, cols = np.nonzero(piece)
    lung_cols = np.flatnonzero(lungs_z[rows.min() : rows.max() + 1].any(axis=0))
    return bool((lung_cols < cols.min()).any() and (lung_cols > cols.max()).any())


def _follow(pieces: np.ndarray, lungs: np.ndarray) -> tuple[np.ndarray, int | None]:
    """The heart's cross-sections, followed up and down from its widest slice; also that slice. Below it a
    cross-section reaches at most one voxel beyond the one above (the heart narrows to its apex): the liver,
    joining from the side, is cut off, and where it is most of the piece the heart has ended."""
    areas = pieces.sum(axis=(1, 2)).astype(float)
    lung_areas = lungs.sum(axis=(1, 2))
    above = np.append(areas[1:], 0.0)
    if not areas.any():
        return np.zeros_like(pieces), None
    # A slice much wider than the one above it has the liver attached: not the heart's widest.
    # Lungs measured where there is a mediastinum: slices of lung or air alone (beyond a phantom) do not count.
    plausible = (lung_areas >= LARGE_LUNG_SHARE * lung_areas[areas > 0].max()) & (areas <= DOWN_MAX_GROWTH * above)
    plausible &= [_between_lungs(piece, lung) for piece, lung in zip(pieces, lungs, strict=True)]
    levels = np.flatnonzero(areas)
    plausible[levels[0] + int(np.ceil(HEART_LUNG_LEVEL * (levels[-1] - levels[0] + 1))) :] = False
    candidates = np.where(plausible, areas, 0.0)
    heart = np.zeros_like(pieces)
    if not candidates.any():
        return heart, None
    widest = int(candidates.argmax())
    heart[widest] = pieces[widest]

    def joins(z: int, previous: int) -> bool:
        overlap = (pieces[z] & heart[previous]).sum()
        return overlap >= MIN_OVERLAP * min(areas[z], areas[previous])

    for z in range(widest + 1, len(areas)):
        if areas[z] < UP_MIN_AREA * areas[widest] or not joins(z, z - 1):
            break
        heart[z] = pieces[z]
    grow = ndimage.generate_binary_structure(2, 2)
    for z in range(widest - 1, -1, -1):
        continued = pieces[z] & ndimage.binary_dilation(ndimage.binary_fill_holes(heart[z + 1]), structure=grow)
        area = continued.sum()
        if area < DOWN_MIN_AREA * areas[widest] or area < MIN_OVERLAP * areas[z]:
            break
        heart[z] = continued
    return heart, widest


def find_heart(ct: CTVolume) -> tuple[HeartRegion | None, str | None]:
    """The heart region, or None with the reason it was not found."""
    spacing_zyx = (ct.spacing[2], ct.spacing[1], ct.spacing[0])
    steps = tuple(max(1, round(GRID_MM / s)) for s in spacing_zyx)
    grid_mm = tuple(s * step for s, step in zip(spacing_zyx, steps, strict=True))
    raw = ct.array[:: steps[0], :: steps[1], :: steps[2]]
    small = ndimage.uniform_filter(raw.astype(np.float32), size=(1, 3, 3))  # noise must not decide the tissue
    bone = _block_max(ct.array, steps) >= BONE_HU
    lungs = _lungs(small, grid_mm)
    if not lungs.any():
        return None, "no lungs found"
    tissue = np.zeros_like(lungs)
    spine_pixels = round(MIN_SPINE_MM2 / (grid_mm[1] * grid_mm[2]))
    for z in np.flatnonzero(lungs.any(axis=(1, 2))):
        tissue[z] = _mediastinum(small[z], bone[z], lungs[z], spine_pixels)
    pieces = _cross_sections(tissue, max(1, round(HEART_OPENING_MM / grid_mm[1])))
    heart, widest = _follow(pieces, lungs)
    if widest is None:
        return None, "no mediastinum between the lungs"
    core = ndimage.binary_erosion(
        np.stack([ndimage.binary_fill_holes(s) for s in heart]), structure=_disk(max(1, round(BLOOD_POOL_CORE_MM / grid_mm[1])))[None]
    )
    blood_pool = float(np.median(small[core])) if core.any() else None

    region = np.zeros_like(heart)
    widen = _disk(max(1, round(MARGIN_MM / grid_mm[1])))
    for z in np.flatnonzero(heart.any(axis=(1, 2))):
        region[z] = ndimage.binary_dilation(ndimage.binary_fill_holes(heart[z]), structure=widen)
    levels = np.flatnonzero(region.any(axis=(1, 2)))
    bottom, top = levels[0], levels[-1]
    region[max(0, bottom - int(np.ceil(BOTTOM_MARGIN_MM / grid_mm[0]))) : bottom] = region[bottom]
    region[top + 1 : top + 1 + int(np.ceil(TOP_MARGIN_MM / grid_mm[0]))] = region[top]
    region &= ~ndimage.binary_erosion(lungs, iterations=2)  # calcified granulomas in the lung are not coronary
    for z in np.flatnonzero(region.any(axis=(1, 2)) & lungs.any(axis=(1, 2))):
        spine = _spine(_filled(bone[z]), convex_hull_mask(lungs[z]), spine_pixels)
        if spine is not None:  # the margin may reach beside the vertebral body (the posterior AV groove), not into it
            region[z] &= ~ndimage.binary_dilation(spine)
            region[z, round(ndimage.center_of_mass(spine)[0]) :] = False
    return HeartRegion(region, steps, ct.shape, blood_pool), None
