"""Small CT volumes and DICOM-editing helpers shared by the io tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid

from CACScoringLib.io import write_dicom_series
from CACScoringLib.phantom import make_thorax_phantom
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


def jpeg_lossless_copy(source: Path, target: Path) -> None:
    """Copy the series in `source` into `target`, its pixels recompressed as JPEG Lossless by GDCM."""
    target.mkdir(parents=True)
    for path in dicom_files(source):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.SetOutputPixelType(sitk.sitkInt16)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG")
        writer.SetFileName(str(target / path.name))
        writer.Execute(reader.Execute())


def sitk_series_reader(folder: Path) -> sitk.Image:
    """The reference: SimpleITK's (GDCM's) own series reader."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


# A PACS-style study: (name, series number, description, grid (z, y, x), spacing (x, y, z) mm, kVp, contrast agent).
# One thorax phantom seed on three grids: the same anatomy, as reconstructions of one scan would show it.
STUDY_SERIES = (
    ("recon_1mm", 2, "CaSc 1.0 Qr36", (48, 96, 96), (2.0, 2.0, 1.0), 120.0, ""),
    ("calcium_3mm", 3, "CaSc 3.0 Qr36", (16, 96, 96), (2.0, 2.0, 3.0), 120.0, ""),
    ("cta_06mm", 4, "CorCTA 0.6 Bv40", (80, 96, 96), (2.0, 2.0, 0.6), 100.0, "Iomeprol 350"),
)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # rows along x, columns along -z: a frontal scout


def write_study(folder: Path, seed: int = 3, patient_id: str = "STUDY") -> dict:
    """A scout, a 1 mm reconstruction, the 3 mm 120 kVp calcium-score series and a 0.6 mm CTA with
    ContrastBolusAgent set, each in its own nested folder of one study, written by the project's writer.

    Returns {name: (SeriesInstanceUID, ThoraxPhantom or None for the scout)}.
    """
    study_uid = generate_uid()
    written = {}
    for name, number, description, shape, spacing, kvp, agent in STUDY_SERIES:
        phantom = make_thorax_phantom(seed=seed, shape=shape, spacing=spacing, p_no_calcium=0.0)
        target = folder / f"SE{number:04d}"
        uid = write_dicom_series(phantom.ct, target / "images", series_description=description, kvp=kvp,
                                 patient_id=patient_id, study_uid=study_uid, series_number=number)
        if agent:
            edit_slices(target, lambda i, ds, agent=agent: setattr(ds, "ContrastBolusAgent", agent))
        written[name] = (uid, phantom)
    frontal = written["calcium_3mm"][1].ct.array.mean(axis=1)[::-1][None]  # (1, z, x), head at the top row
    scout = CTVolume(np.ascontiguousarray(frontal), (2.0, 3.0, 1.0), (-80.0, 0.0, 22.5), CORONAL)
    uid = write_dicom_series(scout, folder / "SE0001", series_description="Topogram 0.6 T20s", kvp=120.0,
                             patient_id=patient_id, study_uid=study_uid, series_number=1)
    edit_slices(folder / "SE0001", lambda i, ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "LOCALIZER"]))
    written["scout"] = (uid, None)
    return written


def kill_on_second_call_script(module: str, function: str, run: str, prelude: str = "", condition: str = "True") -> str:
    """Python source that replaces `module.function` by one that SIGKILLs its own process on its second call
    (when `condition` holds), then runs `run`: a run killed midway, at a known point."""
    return f"""
import os, signal, sys
{prelude}
import {module} as target
calls = []
real = target.{function}
def patched(*args):
    if calls and ({condition}):
        os.kill(os.getpid(), signal.SIGKILL)
    calls.append(1)
    return real(*args)
target.{function} = patched
{run}
"""
