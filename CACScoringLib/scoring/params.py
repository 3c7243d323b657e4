"""Scoring conventions as explicit parameters, with named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import InputError

STANDARD_THRESHOLD_HU = 130.0
WEIGHT_BAND_EDGES_HU = (200.0, 300.0, 400.0)  # peak HU bands [130,200)->1, [200,300)->2, [300,400)->3, >=400->4
SLICE_NORMALIZATIONS = ("increment", "thickness", "none")

# HU of calcium relative to 120 kVp (images are scaled by this factor to 120-kVp-equivalent HU):
# 0.88 at 100 kVp and 0.63 at 70 kVp (phantom study of vendor-independent low-kVp scoring, 2021; 100 kVp
# gives a 148 HU threshold, matching the 147 HU used clinically). Linear between the measured points.
KVP_HU_SCALE_POINTS = ((70.0, 0.63), (100.0, 0.88), (120.0, 1.0))


def kvp_hu_scale(kvp: float) -> float:
    """Factor turning HU at `kvp` into 120-kVp-equivalent HU for calcium."""
    kvps, scales = zip(*KVP_HU_SCALE_POINTS, strict=True)
    if not kvps[0] <= kvp <= kvps[-1]:
        raise InputError(
            f"kVp-adapted threshold is defined for {kvps[0]:g}-{kvps[-1]:g} kVp, not {kvp:g} kVp: "
            "score with the standard 130 HU threshold (drop --kvp-adapted)"
        )
    return float(np.interp(kvp, kvps, scales))


@dataclass(frozen=True)
class ScoringParams:
    threshold_hu: float = STANDARD_THRESHOLD_HU  # voxels with HU >= threshold are calcium candidates
    connectivity: int = 8  # in-plane connectivity of 2D lesions: 4 or 8
    min_area_mm2: float | None = 1.0  # lesions smaller than this are noise (None: no minimum)
    min_pixels: int | None = None  # alternative minimum in pixels
    slice_normalization: str = "increment"  # multiply by increment/3 mm, thickness/3 mm, or not at all
    kvp_adapted_threshold: bool = False  # scale threshold and weight bands to the scan's kVp
    kvp: float | None = None  # overrides the kVp read from the scan
    mass_calibration_factor: float | None = None  # mg HA/cm³ per HU; None: mass is not computed
    mass_water_hu: float = 0.0  # HU of water, subtracted before the calibration factor
    # Blood pool above this HU: a contrast-enhanced CT, on which Agatston is undefined (None: no check).
    contrast_threshold_hu: float | None = 150.0

    def __post_init__(self):
        if self.connectivity not in (4, 8):
            raise InputError(f"connectivity must be 4 or 8, not {self.connectivity}")
        if self.min_area_mm2 is not None and self.min_pixels is not None:
            raise InputError("give a minimum lesion size in mm² or in pixels, not both")
        if self.min_area_mm2 is not None and self.min_area_mm2 < 0:
            raise InputError(f"minimum lesion area must be >= 0 mm², not {self.min_area_mm2}")
        if self.min_pixels is not None and self.min_pixels < 0:
            raise InputError(f"minimum lesion size must be >= 0 pixels, not {self.min_pixels}")
        if self.slice_normalization not in SLICE_NORMALIZATIONS:
            raise InputError(
                f"slice normalization must be one of {', '.join(SLICE_NORMALIZATIONS)}, "
                f"not {self.slice_normalization!r}"
            )
        if not np.isfinite(self.threshold_hu):
            raise InputError("threshold HU must be a finite number")
        if self.contrast_threshold_hu is not None and not np.isfinite(self.contrast_threshold_hu):
            raise InputError("contrast threshold HU must be a finite number (or no contrast check)")
        if self.mass_calibration_factor is not None and not self.mass_calibration_factor > 0:
            raise InputError(f"mass calibration factor must be > 0, not {self.mass_calibration_factor}")

    def with_(self, **changes) -> ScoringParams:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ScoringParams] = {
    # Agatston 1990 as most clinical software applies it: 130 HU, 8-connected, lesions >= 1 mm²,
    # scores scaled to 3 mm slice increment.
    "standard": ScoringParams(),
    # Agatston 1990 on EBT: 3 mm contiguous slices, lesions >= 1 mm², no slice normalisation.
    "agatston1990": ScoringParams(connectivity=8, min_area_mm2=1.0, slice_normalization="none"),
    # Many vendor tools: minimum of 3 connected pixels, 4-connectivity.
    "min3pixels": ScoringParams(connectivity=4, min_area_mm2=None, min_pixels=3),
    # Nothing dropped: every voxel >= 130 HU in a labelled artery counts.
    "raw": ScoringParams(min_area_mm2=None, slice_normalization="none"),
}


def preset(name: str) -> ScoringParams:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown scoring preset {name!r}: choose one of {', '.join(PRESETS)}") from None
