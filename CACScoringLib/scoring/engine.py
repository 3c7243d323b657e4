"""Agatston, volume and mass scoring per lesion, per artery and in total.

A 2D lesion is a connected component (4- or 8-connected in-plane) of (label == artery) & (HU >= threshold)
on one slice. Its Agatston score is area_mm2 * density weight (from its peak HU) * slice normalisation.
Lesions below the minimum size are dropped; the voxels of kept 2D lesions make the volume and mass scores.
A 3D lesion is a 26-connected component of one artery's kept voxels.

Calcium is sparse, so components are found on the list of candidate voxels (sorted linear indices) rather
than on dense volumes: this makes a full score a few passes over the volume and a rescore after an edit
proportional to the edited slices plus the calcium, which is what live editing needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..anatomy import ContrastAssessment, HeartRegion, assess_contrast
from ..errors import InputError
from ..io.labels import check_label_values
from ..labels import ARTERIES, ARTERY_BY_ID, MAX_LABEL
from ..volume import CTVolume
from .categories import cac_drs, risk_category
from .params import STANDARD_THRESHOLD_HU, WEIGHT_BAND_EDGES_HU, ScoringParams, kvp_hu_scale

STANDARD_SLICE_MM = 3.0
NOT_VALID_ON_CONTRAST = "not valid (contrast-enhanced CT)"
_SLICE_TOLERANCE_MM = 0.05

# Forward neighbour offsets (dz, dy, dx): each undirected edge is found once.
_OFFSETS_4 = ((0, 0, 1), (0, 1, 0))
_OFFSETS_8 = _OFFSETS_4 + ((0, 1, 1), (0, 1, -1))
_OFFSETS_26 = tuple(
    (dz, dy, dx)
    for dz in (-1, 0, 1)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dz, dy, dx) > (0, 0, 0)
)


def _clean(value: float | None) -> float | None:
    """A score for JSON: 6 decimals drop float64 rounding noise (0.7 * 0.7 = 0.48999999999999994), far below
    any score's precision."""
    return None if value is None else round(value, 6)


@dataclass
class ArteryScore:
    agatston: float = 0.0
    volume_mm3: float = 0.0
    mass_mg: float | None = None
    lesions: int = 0  # 3D lesions

    def to_dict(self) -> dict:
        return {
            "agatston": _clean(self.agatston),
            "volume_mm3": _clean(self.volume_mm3),
            "mass_mg": _clean(self.mass_mg),
            "lesions": self.lesions,
        }


@dataclass
class Lesion:
    """One 3D lesion (26-connected kept voxels of one artery)."""

    id: int
    artery: str
    first_slice: int
    last_slice: int
    n_slices: int
    area_mm2: float  # summed over its slices
    peak_hu: float
    mean_hu: float
    agatston: float
    volume_mm3: float
    mass_mg: float | None
    n_voxels: int
    centroid_zyx: tuple[float, float, float]  # voxel index coordinates

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "artery": self.artery,
            "first_slice": self.first_slice,
            "last_slice": self.last_slice,
            "n_slices": self.n_slices,
            "area_mm2": _clean(self.area_mm2),
            "peak_hu": _clean(self.peak_hu),
            "mean_hu": _clean(self.mean_hu),
            "agatston": _clean(self.agatston),
            "volume_mm3": _clean(self.volume_mm3),
            "mass_mg": _clean(self.mass_mg),
            "n_voxels": self.n_voxels,
            "centroid_zyx": [_clean(c) for c in self.centroid_zyx],
        }


@dataclass
class ScoreResult:
    arteries: dict[str, ArteryScore]
    total: ArteryScore
    lesions: list[Lesion]
    risk_category: str
    cac_drs: str
    warnings: list[str] = field(default_factory=list)
    params: ScoringParams = field(default_factory=ScoringParams)
    effective_threshold_hu: float = STANDARD_THRESHOLD_HU
    contrast: ContrastAssessment | None = None  # None: not checked

    @property
    def risk_category_valid(self) -> bool:
        return self.contrast is None or not self.contrast.enhanced

    def to_dict(self) -> dict:
        return {
            "arteries": {key: score.to_dict() for key, score in self.arteries.items()},
            "total": self.total.to_dict(),
            "risk_category": self.risk_category,
            "risk_category_valid": self.risk_category_valid,
            "cac_drs": self.cac_drs,
            "contrast": None if self.contrast is None else self.contrast.to_dict(),
            "lesions": [lesion.to_dict() for lesion in self.lesions],
            "warnings": list(self.warnings),
            "parameters": {**self.params.to_dict(), "effective_threshold_hu": self.effective_threshold_hu},
        }


@dataclass
class _Context:
    """Everything about the scan and the conventions that the per-slice work needs."""

    shape: tuple[int, int, int]
    pixel_area_mm2: float
    voxel_volume_mm3: float
    threshold_hu: float  # in scan HU
    hu_scale: float  # scan HU -> 120-kVp-equivalent HU for the weight bands
    normalization: float
    min_pixels: int
    offsets_2d: tuple[tuple[int, int, int], ...]
    mass_factor: float | None
    water_hu: float
    warnings: list[str]


@dataclass
class _Slab:
    """Kept voxels and 2D lesions of a range of slices (arrays sorted by linear voxel index)."""

    voxel: np.ndarray  # int64 linear index of kept voxels
    voxel_artery: np.ndarray  # uint8
    voxel_hu: np.ndarray  # float64
    lesion_first_voxel: np.ndarray  # int64 linear index of each 2D lesion's first voxel (sort key)
    lesion_artery: np.ndarray  # uint8
    lesion_pixels: np.ndarray  # int64
    lesion_agatston: np.ndarray  # float64

    @classmethod
    def empty(cls) -> _Slab:
        i64, u8, f64 = np.empty(0, np.int64), np.empty(0, np.uint8), np.empty(0, np.float64)
        return cls(i64, u8, f64, i64.copy(), u8.copy(), i64.copy(), f64.copy())

    def without_slices(self, slices: np.ndarray, slice_size: int) -> _Slab:
        keep_voxels = ~np.isin(self.voxel // slice_size, slices)
        keep_lesions = ~np.isin(self.lesion_first_voxel // slice_size, slices)
        return _Slab(
            self.voxel[keep_voxels],
            self.voxel_artery[keep_voxels],
            self.voxel_hu[keep_voxels],
            self.lesion_first_voxel[keep_lesions],
            self.lesion_artery[keep_lesions],
            self.lesion_pixels[keep_lesions],
            self.lesion_agatston[keep_lesions],
        )

    @staticmethod
    def merged(parts: list[_Slab]) -> _Slab:
        fields = [np.concatenate([getattr(p, name) for p in parts]) for name in _Slab.__dataclass_fields__]
        slab = _Slab(*fields)
        voxel_order = np.argsort(slab.voxel, kind="stable")
        lesion_order = np.argsort(slab.lesion_first_voxel, kind="stable")
        return _Slab(
            slab.voxel[voxel_order],
            slab.voxel_artery[voxel_order],
            slab.voxel_hu[voxel_order],
            slab.lesion_first_voxel[lesion_order],
            slab.lesion_artery[lesion_order],
            slab.lesion_pixels[lesion_order],
            slab.lesion_agatston[lesion_order],
        )


def _components(voxel: np.ndarray, artery: np.ndarray, shape, offsets) -> tuple[int, np.ndarray]:
    """Connected components of sorted voxels (linear indices); neighbours must share the artery."""
    n = voxel.size
    if n == 0:
        return 0, np.empty(0, np.int64)
    _, ny, nx = shape
    z, rem = np.divmod(voxel, ny * nx)
    y, x = np.divmod(rem, nx)
    sources, targets = [], []
    for dz, dy, dx in offsets:
        zz, yy, xx = z + dz, y + dy, x + dx
        inside = (zz >= 0) & (zz < shape[0]) & (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        neighbour = (zz * ny + yy) * nx + xx
        position = np.searchsorted(voxel, neighbour)
        position[position == n] = n - 1
        linked = inside & (voxel[position] == neighbour) & (artery[position] == artery)
        sources.append(np.flatnonzero(linked))
        targets.append(position[linked])
    rows, cols = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n))
    count, component = connected_components(graph, directed=False)
    # Number components in order of their first voxel so results do not depend on the graph library.
    first = np.full(count, n, np.int64)
    np.minimum.at(first, component, np.arange(n))
    rank = np.empty(count, np.int64)
    rank[np.argsort(first)] = np.arange(count)
    return count, rank[component]


def _group_stats(component: np.ndarray, count: int, values: np.ndarray):
    """Per component: size, sum and max of values, first member index (members must be sorted)."""
    size = np.bincount(component, minlength=count)
    total = np.bincount(component, weights=values, minlength=count)
    order = np.argsort(component, kind="stable")
    starts = np.concatenate(([0], np.cumsum(size)[:-1]))
    peak = np.maximum.reduceat(values[order], starts) if count else np.empty(0)
    first_member = order[starts] if count else np.empty(0, np.int64)
    return size, total, peak, first_member


def _score_slices(hu: np.ndarray, labels: np.ndarray, z0: int, z1: int, ctx: _Context) -> _Slab:
    """2D lesions of slices [z0, z1)."""
    slice_size = ctx.shape[1] * ctx.shape[2]
    hu_slab, label_slab = hu[z0:z1], labels[z0:z1]
    candidate = np.flatnonzero((label_slab > 0) & (hu_slab >= ctx.threshold_hu))
    if candidate.size == 0:
        return _Slab.empty()
    voxel = candidate + z0 * slice_size
    artery = label_slab.reshape(-1)[candidate]
    voxel_hu = hu_slab.reshape(-1)[candidate].astype(np.float64)
    count, component = _components(voxel, artery, ctx.shape, ctx.offsets_2d)
    pixels, _, peak, first_member = _group_stats(component, count, voxel_hu)
    kept = pixels >= ctx.min_pixels
    peak_120kvp = peak * ctx.hu_scale
    weight = 1 + sum((peak_120kvp >= edge).astype(np.int64) for edge in WEIGHT_BAND_EDGES_HU)
    agatston = pixels * ctx.pixel_area_mm2 * weight * ctx.normalization
    kept_voxel = kept[component]
    return _Slab(
        voxel[kept_voxel],
        artery[kept_voxel],
        voxel_hu[kept_voxel],
        voxel[first_member[kept]],
        artery[first_member[kept]],
        pixels[kept].astype(np.int64),
        agatston[kept],
    )


def _aggregate(slab: _Slab, ctx: _Context, params: ScoringParams, contrast: ContrastAssessment | None) -> ScoreResult:
    slice_size = ctx.shape[1] * ctx.shape[2]
    count, lesion_of_voxel = _components(slab.voxel, slab.voxel_artery, ctx.shape, _OFFSETS_26)
    n_voxels, hu_sum, peak, first_member = _group_stats(lesion_of_voxel, count, slab.voxel_hu)
    lesion_artery = slab.voxel_artery[first_member] if count else np.empty(0, np.uint8)

    # Each 2D lesion lies inside one 3D lesion: find it through the 2D lesion's first voxel.
    position = np.searchsorted(slab.voxel, slab.lesion_first_voxel)
    lesion_of_2d = lesion_of_voxel[position] if count else np.empty(0, np.int64)
    agatston = np.bincount(lesion_of_2d, weights=slab.lesion_agatston, minlength=count)
    area = np.bincount(lesion_of_2d, weights=slab.lesion_pixels * ctx.pixel_area_mm2, minlength=count)
    volume = n_voxels * ctx.voxel_volume_mm3
    mean_hu = hu_sum / np.maximum(n_voxels, 1)
    if ctx.mass_factor is None:
        mass = None
    else:
        mass = ctx.mass_factor * (mean_hu - ctx.water_hu) * volume / 1000.0

    z = slab.voxel // slice_size
    y, x = np.divmod(slab.voxel % slice_size, ctx.shape[2])
    first_slice = np.full(count, ctx.shape[0], np.int64)
    last_slice = np.full(count, -1, np.int64)
    np.minimum.at(first_slice, lesion_of_voxel, z)
    np.maximum.at(last_slice, lesion_of_voxel, z)
    slice_sets = np.unique(lesion_of_voxel * ctx.shape[0] + z)
    n_slices = np.bincount(slice_sets // ctx.shape[0], minlength=count)
    centroid = [np.bincount(lesion_of_voxel, weights=c, minlength=count) / np.maximum(n_voxels, 1)
                for c in (z, y, x)]

    lesions = [
        Lesion(
            id=i + 1,
            artery=ARTERY_BY_ID[int(lesion_artery[i])],
            first_slice=int(first_slice[i]),
            last_slice=int(last_slice[i]),
            n_slices=int(n_slices[i]),
            area_mm2=float(area[i]),
            peak_hu=float(peak[i]),
            mean_hu=float(mean_hu[i]),
            agatston=float(agatston[i]),
            volume_mm3=float(volume[i]),
            mass_mg=None if mass is None else float(mass[i]),
            n_voxels=int(n_voxels[i]),
            centroid_zyx=(float(centroid[0][i]), float(centroid[1][i]), float(centroid[2][i])),
        )
        for i in range(count)
    ]
    # Present lesions by artery, then from head to feet, so ids read naturally in tables.
    lesions.sort(key=lambda lesion: (ARTERIES.index(lesion.artery), lesion.first_slice, lesion.id))
    for new_id, lesion in enumerate(lesions, start=1):
        lesion.id = new_id

    arteries = {}
    for key in ARTERIES:
        mine = [lesion for lesion in lesions if lesion.artery == key]
        arteries[key] = ArteryScore(
            agatston=float(sum(lesion.agatston for lesion in mine)),
            volume_mm3=float(sum(lesion.volume_mm3 for lesion in mine)),
            mass_mg=None if mass is None else float(sum(lesion.mass_mg for lesion in mine)),
            lesions=len(mine),
        )
    total = ArteryScore(
        agatston=float(sum(a.agatston for a in arteries.values())),
        volume_mm3=float(sum(a.volume_mm3 for a in arteries.values())),
        mass_mg=None if mass is None else float(sum(a.mass_mg for a in arteries.values())),
        lesions=len(lesions),
    )
    vessels = sum(1 for a in arteries.values() if a.agatston > 0)
    enhanced = contrast is not None and contrast.enhanced
    contrast_warning = None if contrast is None else contrast.warning()
    return ScoreResult(
        arteries=arteries,
        total=total,
        lesions=lesions,
        risk_category=NOT_VALID_ON_CONTRAST if enhanced else risk_category(total.agatston),
        cac_drs=NOT_VALID_ON_CONTRAST if enhanced else cac_drs(total.agatston, vessels),
        warnings=([contrast_warning] if contrast_warning else []) + list(ctx.warnings),
        params=params,
        effective_threshold_hu=ctx.threshold_hu,
        contrast=contrast,
    )


def _differs(value: float | None, standard: float) -> bool:
    return value is not None and abs(value - standard) > _SLICE_TOLERANCE_MM


def _context(ct: CTVolume, params: ScoringParams) -> _Context:
    info = ct.info
    warnings = list(info.warnings)
    increment = float(ct.spacing[2])
    thickness = info.slice_thickness_mm

    if params.slice_normalization == "increment":
        normalization = increment / STANDARD_SLICE_MM
    elif params.slice_normalization == "thickness":
        if thickness is None:
            raise InputError(
                "slice thickness is unknown for this image (e.g. NIfTI has none): "
                "use --slice-normalization increment or none"
            )
        normalization = thickness / STANDARD_SLICE_MM
    else:
        normalization = 1.0

    if thickness is None:
        warnings.append("slice thickness unknown: Agatston scoring is defined on 3 mm slices")
    elif _differs(thickness, STANDARD_SLICE_MM):
        warnings.append(f"slice thickness {thickness:g} mm differs from the 3 mm Agatston standard")
    if _differs(increment, STANDARD_SLICE_MM):
        warnings.append(f"slice increment {increment:g} mm differs from the 3 mm Agatston standard")
    if thickness is not None and increment < thickness - _SLICE_TOLERANCE_MM:
        warnings.append(
            f"overlapping slices (increment {increment:g} mm < thickness {thickness:g} mm): "
            "volume uses the increment; Agatston is normalised by "
            f"{params.slice_normalization}"
        )

    kvp = params.kvp if params.kvp is not None else info.kvp
    hu_scale = 1.0
    if params.kvp_adapted_threshold:
        if kvp is None:
            raise InputError("kVp-adapted threshold needs the tube voltage: give --kvp")
        hu_scale = kvp_hu_scale(kvp)
    if kvp is None:
        warnings.append("tube voltage unknown: Agatston scoring is defined at 120 kVp")
    elif abs(kvp - 120) > 0.5:
        if params.kvp_adapted_threshold:
            warnings.append(f"{kvp:g} kVp scan: threshold and weights adapted (HU x {hu_scale:.3f})")
        else:
            warnings.append(f"{kvp:g} kVp scan: Agatston scoring is defined at 120 kVp (see --kvp-adapted)")

    if params.mass_calibration_factor is None:
        warnings.append("mass score not computed: give a calibration factor or calibration regions")
    if params.min_pixels is not None:
        min_pixels = params.min_pixels
    elif params.min_area_mm2 is not None:
        # Smallest pixel count whose area reaches the minimum (tolerant to float rounding).
        min_pixels = int(np.ceil(params.min_area_mm2 / ct.pixel_area_mm2 - 1e-9))
    else:
        min_pixels = 0
    return _Context(
        shape=tuple(ct.array.shape),
        pixel_area_mm2=ct.pixel_area_mm2,
        voxel_volume_mm3=ct.voxel_volume_mm3,
        threshold_hu=params.threshold_hu / hu_scale,
        hu_scale=hu_scale,
        normalization=normalization,
        min_pixels=min_pixels,
        offsets_2d=_OFFSETS_8 if params.connectivity == 8 else _OFFSETS_4,
        mass_factor=params.mass_calibration_factor,
        water_hu=params.mass_water_hu,
        warnings=warnings,
    )


def effective_threshold_hu(ct: CTVolume, params: ScoringParams) -> float:
    """The calcium threshold in the scan's HU (differs from params.threshold_hu when kVp-adapted)."""
    return _context(ct, params).threshold_hu


def check_labels(ct: CTVolume, labels: np.ndarray) -> np.ndarray:
    """Label map on the CT grid with values 0..4, as uint8."""
    if labels.shape != ct.array.shape:
        raise InputError(
            f"label map shape {labels.shape} (z, y, x) does not match the CT {ct.array.shape}: "
            "give the labels that belong to this image"
        )
    return _label_values(labels)


def _label_values(labels: np.ndarray) -> np.ndarray:
    # Fast path for what Slicer and the readers hand over; the full check sorts all values.
    if labels.dtype == np.uint8 and labels.max(initial=0) <= MAX_LABEL:
        return labels
    return check_label_values(labels)


def _slice_indices(values: Iterable) -> list[int]:
    """Whole-number slice indices; a float such as 1.7 is refused rather than truncated to slice 1."""
    indices = []
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise InputError(f"changed slice {value!r} is not a whole-number slice index; give integer indices")
        indices.append(int(value))
    return indices


class IncrementalScorer:
    """Scores a CT and its label map, then rescoring only the slices an edit changed.

    The result after any sequence of updates equals a full recompute of the current labels.
    """

    def __init__(
        self, ct: CTVolume, labels: np.ndarray, params: ScoringParams | None = None, contrast: ContrastAssessment | None = None
    ):
        """contrast: the CT's blood-pool check (assess_contrast), measured once by the caller; None: not checked."""
        self.params = params or ScoringParams()
        self.contrast = contrast
        self._hu = ct.array
        self._ctx = _context(ct, self.params)
        self._labels = check_labels(ct, labels).copy()
        self._slab = _score_slices(self._hu, self._labels, 0, self._labels.shape[0], self._ctx)
        self.result = _aggregate(self._slab, self._ctx, self.params, self.contrast)

    @property
    def labels(self) -> np.ndarray:
        """The label map as last scored (a private copy: edit yours, then call update)."""
        return self._labels

    def update(self, labels: np.ndarray, changed_slices: Iterable[int] | None = None) -> ScoreResult:
        """Rescore after an edit. Without `changed_slices` the changed slices are found by comparison."""
        if labels.shape != self._labels.shape:
            raise InputError(f"edited label map shape {labels.shape} differs from {self._labels.shape}")
        if changed_slices is None:
            changed = np.flatnonzero((labels != self._labels).any(axis=(1, 2)))
        else:
            changed = np.unique(np.array(_slice_indices(changed_slices), dtype=np.int64))
            if changed.size and (changed[0] < 0 or changed[-1] >= labels.shape[0]):
                raise InputError(f"changed slice outside 0-{labels.shape[0] - 1}: {changed.tolist()}")
        return self.update_slices(changed, labels[changed])

    def update_slices(self, changed_slices, new_slices: np.ndarray) -> ScoreResult:
        """Rescore after an edit given as the changed slices' indices (sorted, unique) and their whole new
        label slices, (n, rows, columns): what a caller that knows where the edit was need not copy out."""
        changed = np.asarray(changed_slices, dtype=np.int64)
        if new_slices.shape != (changed.size, *self._labels.shape[1:]):
            raise InputError(f"{new_slices.shape} label slices given for {changed.size} slices of "
                             f"{self._labels.shape[1:]}")
        if changed.size and (changed[0] < 0 or changed[-1] >= self._labels.shape[0] or (np.diff(changed) <= 0).any()):
            raise InputError(f"changed slices must be sorted, unique and within 0-{self._labels.shape[0] - 1}: "
                             f"{changed.tolist()}")
        if changed.size == 0:
            return self.result
        self._labels[changed] = _label_values(new_slices)
        slice_size = self._labels.shape[1] * self._labels.shape[2]
        parts = [self._slab.without_slices(changed, slice_size)]
        parts += [_score_slices(self._hu, self._labels, int(z), int(z) + 1, self._ctx) for z in changed]
        self._slab = _Slab.merged(parts)
        self.result = _aggregate(self._slab, self._ctx, self.params, self.contrast)
        return self.result


def score_volume(
    ct: CTVolume, labels: np.ndarray, params: ScoringParams | None = None, contrast: ContrastAssessment | None = None
) -> ScoreResult:
    """Full per-lesion, per-artery and total Agatston, volume and mass scores."""
    return IncrementalScorer(ct, labels, params, contrast).result


def check_contrast(
    ct: CTVolume, params: ScoringParams, heart: HeartRegion | None = None, blood_pool_hu: float | None = None
) -> ContrastAssessment | None:
    """The blood-pool check of params.contrast_threshold_hu (None when switched off); reuses a heart region, or
    the blood pool HU, that the segmentation already found."""
    if params.contrast_threshold_hu is None:
        return None
    return assess_contrast(ct, params.contrast_threshold_hu, heart, blood_pool_hu)
