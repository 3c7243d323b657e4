"""Small CT volumes and DICOM-editing helpers shared by the io tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from CACScoringLib.volume import CTVolume

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def random_ct(
    shape=(6, 8, 10),
    spacing=(0.7, 0.6, 2.5),
    origin=(-12.5, 30.25, -101.0),
    direction=AXIAL,
    seed=0,
) -> CTVolume:
    """Integer HU (so DICOM's int16 storage keeps them exactly) on a non-trivial grid."""
    array = np.random.default_rng(seed).integers(-1024, 2500, size=shape).astype(np.float32)
    return CTVolume(array=array, spacing=spacing, origin=origin, direction=direction)


def rotation(axis, degrees: float) -> np.ndarray:
    """Right-handed rotation matrix about `axis` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*.dcm"))


def edit_slices(folder: Path, edit: Callable[[int, pydicom.Dataset], None]) -> None:
    """Apply `edit(index, dataset)` to every slice (in file-name order, which the writer makes z order)."""
    for index, path in enumerate(dicom_files(folder)):
        ds = pydicom.dcmread(path)
        edit(index, ds)
        ds.save_as(path)


def sitk_series_reader(folder: Path) -> sitk.Image:
    """The reference: SimpleITK's (GDCM's) own series reader."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()
