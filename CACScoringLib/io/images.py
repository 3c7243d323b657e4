"""CT volumes from DICOM folders or NIfTI/NRRD files, and NIfTI/NRRD writing, with SimpleITK geometry."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..volume import CTVolume, ScanInfo
from .dicom import read_dicom_series, series_uid_of

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED = "a DICOM folder, .nii, .nii.gz, .nrrd or .nhdr"


def image_suffix(path: Path) -> str | None:
    """The image-file suffix of `path` (".nii.gz" counts as one), or None for anything else."""
    name = path.name.lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if name.endswith(suffix)), None)


def _nifti_expected_bytes(header: bytes) -> int | None:
    """vox_offset + voxel data bytes from a NIfTI-1 or NIfTI-2 header, or None if it is not one."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack_from(order + "i", header, 0)[0] == 348:
            dims = struct.unpack_from(order + "8h", header, 40)
            bitpix, offset = struct.unpack_from(order + "h", header, 72)[0], struct.unpack_from(order + "f", header, 108)[0]
            break
        if len(header) >= 540 and struct.unpack_from(order + "i", header, 0)[0] == 540:
            dims = struct.unpack_from(order + "8q", header, 16)
            bitpix, offset = struct.unpack_from(order + "h", header, 14)[0], struct.unpack_from(order + "q", header, 168)[0]
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0 or not math.isfinite(offset):
        return None  # malformed: SimpleITK's reader names the problem
    voxels = math.prod(max(int(d), 1) for d in dims[1 : dims[0] + 1])
    return max(int(offset), 348) + (voxels * bitpix + 7) // 8


def _check_nifti_complete(path: Path, what: str) -> None:
    """SimpleITK reads a cut NIfTI (plain or gzip) with the missing voxels as zeros: count the bytes first."""
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as stream:
            expected = _nifti_expected_bytes(stream.read(540))
            if expected is None:
                return
            stream.seek(0, 2)  # gzip seeks by decompressing to the end, checking the stream and its CRC
            size = stream.tell()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise InputError(f"cannot read {what} {path} ({error}); the file is truncated or corrupt: copy it again") from None
    except OSError as error:
        raise InputError(f"cannot read {what} {path} ({error.strerror or error})") from None
    if size < expected:
        raise InputError(
            f"{what} {path} is truncated: its header describes {expected} bytes of image but it holds {size}; "
            "copy the file again"
        )


def read_sitk_image(path: Path, what: str) -> sitk.Image:
    """A 3D single-component image file read by SimpleITK; InputError names the problem otherwise.

    NIfTI files are checked whole first; SimpleITK's NRRD and MetaImage readers already refuse short data.
    """
    if image_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path, what)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise InputError(f"cannot read {what} {path} ({reason}); the file may be truncated or corrupt") from error
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} values per voxel; "
            "expected a single-channel volume (export one volume or one labelmap)"
        )
    if image.GetDimension() != 3:
        raise InputError(f"{what} {path} is {image.GetDimension()}D; expected one 3D volume")
    return image


def read_image_file(path: str | Path) -> CTVolume:
    """A NIfTI/NRRD/MetaImage CT volume in HU, geometry as SimpleITK reads it (LPS, oblique kept)."""
    path = Path(path)
    image = read_sitk_image(path, "image")
    info = ScanInfo(
        slice_increment_mm=float(image.GetSpacing()[2]),
        modality="CT",
        source=str(path),
    )  # NIfTI/NRRD carry no kVp or thickness: the scoring warns that they are unknown
    return CTVolume.from_sitk(image, info)


def read_ct(path: str | Path, series_uid: str | None = None, workers: int | None = None) -> CTVolume:
    """Read a CT volume in HU (float32) from a DICOM folder (searched recursively), a DICOM file of a
    series (its whole series in that folder is read), or a NIfTI/NRRD file.

    With several DICOM series under the folder (a study: scout, calcium score, CTA...), `series_uid` picks
    one; without it the non-contrast calcium-score series is chosen (`dicom.choose_series`) and
    `info.series_choice` says which and why. `workers` threads read a DICOM series (default: one per CPU,
    at most 8; 1 reads serially, with the same result).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; give {SUPPORTED}")
    if path.is_dir():
        return read_dicom_series(path, series_uid, workers)
    if image_suffix(path):
        return read_image_file(path)
    uid = series_uid_of(path)
    if uid is None:
        raise InputError(f"{path} is not a DICOM or image file; give {SUPPORTED}")
    return read_dicom_series(path.parent, series_uid or uid, workers)


def _writable_suffix(path: Path) -> str:
    suffix = image_suffix(path)
    if suffix is None:
        raise InputError(f"cannot write {path}: use a .nii, .nii.gz, .nrrd or .nhdr file name")
    return suffix


def write_sitk_image(image: sitk.Image, path: str | Path) -> Path:
    path = Path(path)
    suffix = _writable_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # .nii stays uncompressed by definition; the other formats compress losslessly.
    sitk.WriteImage(image, str(path), useCompression=suffix != ".nii")
    return path


def write_image(ct: CTVolume, path: str | Path) -> Path:
    """Write the CT (float32 HU, with its geometry) as NIfTI or NRRD, chosen by the file extension."""
    return write_sitk_image(ct.to_sitk(np.asarray(ct.array, dtype=np.float32)), path)
