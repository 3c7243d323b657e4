"""CTVolume: HU array plus geometry and the acquisition facts that scoring warnings need.

Conventions follow SimpleITK: `array` is indexed (z, y, x); `spacing`, `origin` are (x, y, z) in mm;
`direction` is the row-major 3x3 direction cosine matrix (9 floats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from .errors import InputError


@dataclass
class ScanInfo:
    """Acquisition facts kept for scoring warnings and reports (None when unknown)."""

    slice_thickness_mm: float | None = None
    slice_increment_mm: float | None = None  # from actual slice positions
    kvp: float | None = None
    manufacturer: str | None = None
    modality: str | None = None
    series_instance_uid: str | None = None
    patient_id: str | None = None
    source: str | None = None
    series_choice: dict | None = None  # DICOM: the series read, how it was chosen, the others passed over
    warnings: list[str] = field(default_factory=list)  # non-fatal reader findings


def check_spacing(spacing, what: str = "CT", fix: str = "fix the image header") -> tuple[float, float, float]:
    """(x, y, z) voxel spacing as floats, each finite and > 0; InputError otherwise (scores scale with it)."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise InputError(f"{what} has a spacing {spacing!r} that is not three numbers; {fix}") from None
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise InputError(f"{what} has voxel spacing {values} mm: x, y and z must each be a positive finite "
                         f"number; {fix}")
    return values


def _as_written(spacing: float) -> float:
    """A spacing stored in single precision (NIfTI's pixdim) as the decimal it was written from: float32
    0.699999988 -> 0.7, so areas and volumes carry no float32 noise. Other doubles pass unchanged."""
    single = np.float32(spacing)
    return float(str(single)) if float(single) == spacing else float(spacing)


@dataclass
class CTVolume:
    array: np.ndarray  # (z, y, x), HU, float32
    spacing: tuple[float, float, float]  # (x, y, z) mm; z = slice increment
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    info: ScanInfo = field(default_factory=ScanInfo)

    def __post_init__(self):
        what = f"CT {self.info.source}" if self.info.source else "CT"
        self.spacing = check_spacing(self.spacing, what)
        for name, values, count in (("origin", self.origin, 3), ("direction", self.direction, 9)):
            if len(values) != count or not all(math.isfinite(float(v)) for v in values):
                raise InputError(f"{what} has an invalid {name} {tuple(values)}: expected {count} finite numbers; "
                                 "fix the image header")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def pixel_area_mm2(self) -> float:
        return float(self.spacing[0] * self.spacing[1])

    @property
    def voxel_volume_mm3(self) -> float:
        return float(self.spacing[0] * self.spacing[1] * self.spacing[2])

    def with_array(self, array: np.ndarray) -> CTVolume:
        """Same geometry and info, another array (e.g. a label map or a processed image)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from volume shape {self.array.shape}")
        return replace(self, array=array)

    def to_sitk(self, array: np.ndarray | None = None) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array if array is None else array)
        image.SetSpacing(tuple(float(s) for s in self.spacing))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in self.direction))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, info: ScanInfo | None = None, dtype=np.float32) -> CTVolume:
        return cls(
            array=sitk.GetArrayFromImage(image).astype(dtype, copy=False),
            spacing=tuple(_as_written(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
            info=info or ScanInfo(),
        )
