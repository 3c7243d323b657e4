"""Label maps (0 background, 1 LM, 2 LAD, 3 LCX, 4 RCA) on a CT's grid: reading with checks, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..labels import ARTERY_BY_ID
from ..volume import CTVolume
from .images import read_sitk_image, write_sitk_image

VALID_IDS = frozenset({0, *ARTERY_BY_ID})
_LABEL_TABLE = ", ".join(["0 background", *(f"{i} {key}" for i, key in sorted(ARTERY_BY_ID.items()))])
_FIX = "resample the label map onto the CT grid (e.g. export the segmentation with the CT as reference)"
# Same grid when within these: 0.1% of a spacing, 1% of the smallest voxel side, 1e-3 in each cosine
# (NIfTI keeps geometry in float32, so exact equality is too strict).
_SPACING_REL = 1e-3
_ORIGIN_VOXELS = 1e-2
_DIRECTION_ABS = 1e-3


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def check_label_values(labels: np.ndarray, what: str = "label map") -> np.ndarray:
    """The labels as uint8 after checking they are whole numbers in the label table."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "b":
        raise InputError(f"{what} is boolean; it must hold label ids ({_LABEL_TABLE})")
    if labels.dtype.kind == "f":
        fractional = labels[labels != np.round(labels)]
        if fractional.size:
            raise InputError(
                f"{what} holds non-integer values (e.g. {fractional.flat[0]:g}); a label map holds the "
                f"integer ids {_LABEL_TABLE}; export a labelmap, not a probability or image volume"
            )
    elif labels.dtype.kind not in "iu":
        raise InputError(f"{what} has data type {labels.dtype}; expected integer label ids")
    values = np.unique(labels)
    bad = [v for v in values.tolist() if v not in VALID_IDS]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:10]) + (f" (+{len(bad) - 10} more)" if len(bad) > 10 else "")
        raise InputError(
            f"{what} holds values outside 0..{max(VALID_IDS)}: {shown}; relabel it to {_LABEL_TABLE}"
        )
    return labels.astype(np.uint8)


def _geometry_differences(image: sitk.Image, reference: CTVolume) -> list[str]:
    size = tuple(image.GetSize())
    expected_size = tuple(reversed(reference.shape))
    if size != expected_size:
        return [f"size {size} vs the CT's {expected_size} voxels (x, y, z)"]
    spacing, ref_spacing = np.array(image.GetSpacing()), np.array(reference.spacing, dtype=float)
    origin, ref_origin = np.array(image.GetOrigin()), np.array(reference.origin, dtype=float)
    direction, ref_direction = np.array(image.GetDirection()), np.array(reference.direction, dtype=float)
    differences = []
    if np.any(np.abs(spacing - ref_spacing) > _SPACING_REL * ref_spacing):
        differences.append(f"spacing {_fmt(spacing)} vs the CT's {_fmt(ref_spacing)} mm")
    if np.any(np.abs(origin - ref_origin) > _ORIGIN_VOXELS * ref_spacing.min()):
        differences.append(f"origin {_fmt(origin)} vs the CT's {_fmt(ref_origin)} mm")
    if np.any(np.abs(direction - ref_direction) > _DIRECTION_ABS):
        differences.append(f"direction {_fmt(direction)} vs the CT's {_fmt(ref_direction)}")
    return differences


def read_labels(path: str | Path, reference: CTVolume) -> np.ndarray:
    """A NIfTI/NRRD label map as uint8 (z, y, x) on `reference`'s grid; InputError if the grid or values differ."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"label map {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"label map {path} is a folder; give a .nii, .nii.gz, .nrrd or .nhdr labelmap file")
    image = read_sitk_image(path, "label map")
    differences = _geometry_differences(image, reference)
    if differences:
        raise InputError(f"label map {path.name} does not match the CT grid: {'; '.join(differences)}; {_FIX}")
    return check_label_values(sitk.GetArrayFromImage(image), f"label map {path.name}")


def write_labels(labels: np.ndarray, reference: CTVolume, path: str | Path) -> Path:
    """Write a label map (values 0..4, shape of `reference`) as uint8 NIfTI/NRRD with the CT's geometry."""
    labels = np.asarray(labels)
    if labels.shape != reference.shape:
        raise InputError(f"label map shape {labels.shape} differs from the CT's {reference.shape} (z, y, x)")
    return write_sitk_image(reference.to_sitk(check_label_values(labels)), path)
