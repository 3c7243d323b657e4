"""Read CT DICOM series with pydicom: find series in a folder tree, validate their geometry, build a CTVolume.

Headers are read once with large values (the pixel data) deferred, so a folder of many series costs
little more than its headers; only the chosen series' pixels are then read, on a small thread pool.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from ..volume import CTVolume, ScanInfo

# Values above this size are read only when used: the pixel data of the chosen series.
_DEFER_SIZE = "4 KB"
_WORKERS = min(8, (os.cpu_count() or 1) + 2)
# Geometry tolerances.
_MAX_TILT_DEG = 1.0  # slice normal or slice stacking farther than this from patient z / the normal: refuse
_DUPLICATE_MM = 1e-3  # two slices closer than this along the normal sit at the same position
_GAP_FACTOR = 1.5  # an increment above 1.5x the usual one means missing slices
_JITTER_FRACTION = 0.01  # increments varying by more than 1% of the usual one get a warning
_SAME_COSINE = 1e-4
_SAME_SPACING_MM = 1e-4


@dataclass(frozen=True)
class SeriesSummary:
    """One image series found under a folder (what `list_series` returns)."""

    series_instance_uid: str
    description: str
    modality: str
    n_slices: int
    series_number: int | None
    patient_id: str | None
    folder: Path  # folder of its first file

    def describe(self) -> str:
        return f"{self.series_instance_uid} '{self.description}' ({self.modality}, {self.n_slices} slices)"


@dataclass
class _Scan:
    series: dict[str, list[tuple[Path, Dataset]]]
    non_image: list[tuple[Path, str]]  # DICOM files without an image: (path, modality or SOP class)
    non_dicom: list[Path]


def _has_dicom_prefix(path: Path) -> bool | None:
    """True: 'DICM' at byte 128; False: raw dataset without preamble (starts in group 0002/0008); None: neither."""
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        return True
    if head[:2] in (b"\x02\x00", b"\x08\x00"):
        return False
    return None


def _read_header(path: Path) -> Dataset | None:
    """The header (pixel data deferred) of a DICOM file; None for a file that is not DICOM."""
    try:
        prefixed = _has_dicom_prefix(path)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}; check the file permissions") from error
    if prefixed is None:
        return None
    try:
        ds = dcmread(path, defer_size=_DEFER_SIZE, force=not prefixed)
    except InvalidDicomError:
        return None
    except Exception as error:  # pydicom raises many types on a broken file; the user needs the file name
        raise _corrupt(path, f"{type(error).__name__}: {error}") from error
    # pydicom stops quietly at an early end of file: an image whose header lacks its matrix was cut short.
    sop_class = ds.file_meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
    if sop_class is None:
        if prefixed:
            raise _corrupt(path, "no SOP class")
        return None
    if "Image Storage" in sop_class.name and ("Rows" not in ds or "PixelData" not in ds):
        raise _corrupt(path, f"{sop_class.name} without {'Rows' if 'Rows' not in ds else 'PixelData'}")
    return ds


def _corrupt(path: Path, reason: str) -> InputError:
    return InputError(f"{path} is a truncated or corrupt DICOM file ({reason}); remove or replace it and try again")


def _kind(ds: Dataset) -> str:
    if ds.get("Modality"):
        return str(ds.Modality)
    return ds.SOPClassUID.name if "SOPClassUID" in ds else "unknown kind"


def _files_under(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(Path(root) / name for name in sorted(names))
    return files


def _scan(folder: Path) -> _Scan:
    if not folder.exists():
        raise InputError(f"{folder} does not exist; check the path")
    files = _files_under(folder)
    if not files:
        raise InputError(f"folder {folder} is empty; point to a folder of DICOM slices")
    with ThreadPoolExecutor(_WORKERS) as pool:
        headers = list(pool.map(_read_header, files))
    scan = _Scan(series={}, non_image=[], non_dicom=[])
    for path, ds in zip(files, headers, strict=True):
        if ds is None:
            scan.non_dicom.append(path)
        elif "Rows" not in ds:
            scan.non_image.append((path, _kind(ds)))
        else:
            scan.series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    if not scan.series:
        if scan.non_image:
            kinds = ", ".join(sorted({kind for _, kind in scan.non_image}))
            raise InputError(
                f"{folder} holds {len(scan.non_image)} DICOM file(s) but no image (found: {kinds}); "
                "point to the folder of the CT image series"
            )
        raise InputError(
            f"no DICOM files in {folder} ({len(files)} file(s) checked, e.g. {files[0].name}); "
            "point to a folder of DICOM slices or to a .nii/.nii.gz/.nrrd file"
        )
    return scan


def _summary(uid: str, members: list[tuple[Path, Dataset]]) -> SeriesSummary:
    first = members[0][1]
    number = first.get("SeriesNumber")
    return SeriesSummary(
        series_instance_uid=uid or "(no SeriesInstanceUID)",
        description=str(first.get("SeriesDescription", "")),
        modality=str(first.get("Modality", "")),
        n_slices=len(members),
        series_number=int(number) if number not in (None, "") else None,
        patient_id=str(first.PatientID) if "PatientID" in first else None,
        folder=members[0][0].parent,
    )


def _sorted_summaries(scan: _Scan) -> list[SeriesSummary]:
    summaries = [_summary(uid, members) for uid, members in scan.series.items()]
    return sorted(summaries, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid))


def list_series(folder: str | Path) -> list[SeriesSummary]:
    """Summaries of the DICOM image series under `folder` (searched recursively), by series number."""
    return _sorted_summaries(_scan(Path(folder)))


def _pick_series(scan: _Scan, folder: Path, series_uid: str | None) -> tuple[str, list[tuple[Path, Dataset]]]:
    listing = "; ".join(s.describe() for s in _sorted_summaries(scan))
    if series_uid is not None:
        if series_uid not in scan.series:
            raise InputError(f"series {series_uid} is not in {folder}; the series there are: {listing}")
        return series_uid, scan.series[series_uid]
    if len(scan.series) > 1:
        raise InputError(
            f"{folder} holds {len(scan.series)} image series; choose one by its SeriesInstanceUID: {listing}"
        )
    return next(iter(scan.series.items()))


def _require(ds: Dataset, path: Path, keyword: str):
    if keyword not in ds or ds[keyword].value in (None, ""):
        raise InputError(f"{path} has no {keyword}; the reader needs it to place the slice in space")
    return ds[keyword].value


def _check_uniform(members: list[tuple[Path, Dataset]]) -> None:
    first = members[0][1]
    frames = int(first.get("NumberOfFrames") or 1)
    if frames > 1:
        raise InputError(
            f"{members[0][0]} is a multi-frame (enhanced) image with {frames} frames; convert the series "
            "to single-frame slices or to NIfTI (e.g. with dcm2niix) and try again"
        )
    if int(first.get("SamplesPerPixel", 1)) != 1:
        raise InputError(f"{members[0][0]} is a colour image; a CT series needs greyscale slices")
    modality = str(first.get("Modality", ""))
    if modality and modality != "CT":
        raise InputError(
            f"series {first.get('SeriesInstanceUID', '')} is modality {modality}, not CT; "
            "calcium scoring needs a CT series"
        )
    sizes = Counter((int(ds.Rows), int(ds.Columns)) for _, ds in members)
    if len(sizes) > 1:
        described = ", ".join(f"{r}x{c} ({n} slices)" for (r, c), n in sizes.most_common())
        raise InputError(
            f"the series mixes matrix sizes: {described}; keep only the slices of one reconstruction"
        )


def _geometry(members: list[tuple[Path, Dataset]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row cosine, column cosine, normal, pixel spacing) shared by all slices; refuses non-axial stacks."""
    cosines = np.array([[float(v) for v in _require(ds, p, "ImageOrientationPatient")] for p, ds in members])
    spacings = np.array([[float(v) for v in _require(ds, p, "PixelSpacing")] for p, ds in members])
    if cosines.shape[1] != 6 or spacings.shape[1] != 2:
        raise InputError(f"{members[0][0]}: ImageOrientationPatient needs 6 and PixelSpacing 2 values")
    if np.abs(cosines - cosines[0]).max() > _SAME_COSINE:
        raise InputError("the slices of the series have different orientations; reformat the series to axial")
    if np.abs(spacings - spacings[0]).max() > _SAME_SPACING_MM:
        raise InputError("the slices of the series have different pixel spacings; keep one reconstruction")
    row, column = cosines[0, :3], cosines[0, 3:]
    row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    tilt = np.degrees(np.arccos(min(1.0, abs(normal[2]))))
    if tilt > _MAX_TILT_DEG:
        raise InputError(
            f"the slices are not axial (slice normal {tilt:.1f} degrees from the patient z axis: gantry tilt "
            "or an oblique/sagittal/coronal reconstruction); reformat the series to axial slices and try again"
        )
    return row, column, normal, spacings[0]


def _order_and_increment(
    members: list[tuple[Path, Dataset]], normal: np.ndarray, warnings: list[str]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Order of the slices along the normal, their sorted positions, and the mean slice increment."""
    positions = np.array([[float(v) for v in _require(ds, p, "ImagePositionPatient")] for p, ds in members])
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    positions, distance = positions[order], distance[order]
    steps = np.diff(distance)
    duplicates = np.flatnonzero(steps < _DUPLICATE_MM)
    if duplicates.size:
        i = duplicates[0]
        names = f"{members[order[i]][0].name}, {members[order[i + 1]][0].name}"
        raise InputError(
            f"{duplicates.size + 1} slices share a position, e.g. {distance[i]:.3f} mm ({names}); the folder "
            "may hold several phases or copies of one series; keep one image per position"
        )
    if len(members) == 1:
        ds = members[0][1]
        increment = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 0)
        if increment <= 0:
            raise InputError(f"{members[0][0]} is a single slice without SliceThickness; give the whole series")
        warnings.append(f"the series has a single slice; using {increment:g} mm as its thickness")
        return order, positions, increment

    lateral = (positions - positions[0]) - np.outer(distance - distance[0], normal)
    shear = np.linalg.norm(lateral[-1]) / (distance[-1] - distance[0])
    if np.degrees(np.arctan(shear)) > _MAX_TILT_DEG:
        raise InputError(
            f"the slice positions are sheared by {np.degrees(np.arctan(shear)):.1f} degrees from the slice "
            "normal (gantry tilt); reformat the series to axial slices without tilt and try again"
        )
    usual = _usual_step(steps)
    irregular = np.flatnonzero((steps > _GAP_FACTOR * usual) | (steps < usual / _GAP_FACTOR))
    if irregular.size:
        listed = ", ".join(
            f"{distance[i]:.2f} to {distance[i + 1]:.2f} mm ({steps[i]:.2f} mm)" for i in irregular[:3]
        )
        more = f" and {irregular.size - 3} more" if irregular.size > 3 else ""
        raise InputError(
            f"missing slices or irregular slice spacing: between slice positions {listed}{more}, where the "
            f"usual increment is {usual:.2f} mm; give the complete series with evenly spaced slices"
        )
    if np.abs(steps - usual).max() > _JITTER_FRACTION * usual:
        warnings.append(
            f"slice increment varies from {steps.min():.3f} to {steps.max():.3f} mm; "
            f"the volume uses the mean increment"
        )
    return order, positions, float((distance[-1] - distance[0]) / (len(members) - 1))


def _usual_step(steps: np.ndarray) -> float:
    """The most frequent slice increment (to 0.01 mm; the smallest on a tie), robust in short series
    where a median cannot tell a gap from the regular step."""
    counts = Counter(np.round(steps, 2).tolist())
    top = max(counts.values())
    return min(step for step, count in counts.items() if count == top)


def _read_slice_hu(path: Path, ds: Dataset, out: np.ndarray) -> None:
    """Decode one slice and write it into `out` (a float32 (rows, columns) view of the volume) in HU."""
    if "PixelData" not in ds:
        raise InputError(f"{path} has no pixel data; remove it or point to a folder of CT image slices")
    try:
        stored = ds.pixel_array
    except Exception as error:  # broken or unsupported pixel data; name the file for the user
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and syntax.is_compressed:
            out[...] = _slice_hu_gdcm(path, syntax, error, out.shape)
            return
        raise InputError(
            f"cannot read the pixel data of {path} ({error}); the file may be truncated: remove or replace it"
        ) from error
    if stored.shape != out.shape:
        raise InputError(f"{path}: pixel data has shape {stored.shape}, expected {out.shape}; the file is corrupt")
    # In place: no temporary float copies of the slice.
    out[...] = stored
    slope = float(ds.get("RescaleSlope") or 1.0)
    if slope != 1.0:
        out *= np.float32(slope)
    out += np.float32(ds.get("RescaleIntercept") or 0.0)


def _slice_hu_gdcm(path: Path, syntax, error: Exception, shape: tuple[int, int]) -> np.ndarray:
    """Compressed slices that pydicom has no decoder for: GDCM (inside SimpleITK) decodes and rescales to HU."""
    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError:
        raise InputError(
            f"cannot decode {path} (compressed as {syntax.name}: {error}); decompress the series "
            "(e.g. gdcmconv --raw) or export it uncompressed"
        ) from error
    if (image.GetHeight(), image.GetWidth()) != shape:
        raise InputError(f"{path}: decoded image is {image.GetHeight()}x{image.GetWidth()}, expected {shape}")
    return sitk.GetArrayFromImage(image).reshape(shape)


def acquisition_warnings(thicknesses, kvp: float | None, modality, increment: float) -> list[str]:
    """What a reader should know about the acquisition tags: `thicknesses` per slice (None or "" when
    missing; the first slice's decides), `kvp` and `modality` of the first slice. Shared with the Slicer
    module, which takes the same tags from Slicer's DICOM database."""
    warnings = []
    present = {float(t) for t in thicknesses if t not in (None, "")}
    if thicknesses[0] in (None, ""):
        warnings.append(f"SliceThickness missing; assuming it equals the slice increment ({increment:.2f} mm)")
    elif len(present) > 1:
        warnings.append(f"SliceThickness varies between slices ({min(present):g}-{max(present):g} mm)")
    if kvp is None:
        warnings.append("KVP (tube voltage) missing; scoring assumes a standard 120 kVp acquisition")
    if not modality:
        warnings.append("Modality missing; assuming CT")
    return warnings


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> CTVolume:
    """Read one CT series from a DICOM folder tree as a CTVolume in HU (see `read_ct`)."""
    folder = Path(folder)
    scan = _scan(folder)
    uid, members = _pick_series(scan, folder, series_uid)
    _check_uniform(members)
    warnings: list[str] = []
    row, column, normal, pixel_spacing = _geometry(members)
    order, positions, increment = _order_and_increment(members, normal, warnings)
    members = [members[i] for i in order]

    first = members[0][1]
    array = np.empty((len(members), int(first.Rows), int(first.Columns)), dtype=np.float32)
    if "RescaleSlope" not in first or "RescaleIntercept" not in first:
        warnings.append("RescaleSlope/RescaleIntercept missing; taking stored pixel values as HU")
    with ThreadPoolExecutor(_WORKERS) as pool:
        # list() waits for every slice and re-raises the first InputError.
        list(pool.map(lambda k: _read_slice_hu(*members[k], array[k]), range(len(members))))

    thicknesses = [ds.get("SliceThickness") for _, ds in members]
    thickness = float(first.SliceThickness) if first.get("SliceThickness") not in (None, "") else None
    kvp = float(first.KVP) if first.get("KVP") not in (None, "") else None
    warnings += acquisition_warnings(thicknesses, kvp, first.get("Modality"), increment)

    info = ScanInfo(
        slice_thickness_mm=thickness,
        slice_increment_mm=increment,
        kvp=kvp,
        manufacturer=str(first.Manufacturer) if first.get("Manufacturer") else None,
        modality=str(first.get("Modality") or "CT"),
        series_instance_uid=uid or None,
        patient_id=str(first.PatientID) if first.get("PatientID") else None,
        source=str(folder),
        warnings=warnings,
    )
    return CTVolume(
        array=array,
        spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), increment),  # PixelSpacing is (row, column)
        origin=tuple(float(v) for v in positions[0]),
        direction=tuple(float(v) for v in np.column_stack([row, column, normal]).ravel()),
        info=info,
    )


def series_uid_of(path: str | Path) -> str | None:
    """SeriesInstanceUID of one DICOM file, or None when the file is not DICOM."""
    ds = _read_header(Path(path))
    return None if ds is None else str(ds.get("SeriesInstanceUID", ""))
