"""Read CT DICOM series with pydicom: find series in a folder tree, choose one, validate its geometry, build
a CTVolume.

Headers are read once with large values (the pixel data) deferred, so a folder of many series costs
little more than its headers; only the chosen series' pixels are then read, on a thread pool. A study
folder (scout, calcium-score series, CTA, thin reconstructions) gets its non-contrast calcium-score series
chosen from header facts and series descriptions (`choose_series`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array

from ..errors import InputError
from ..volume import CTVolume, ScanInfo

# Values above this size are read only when used: the pixel data of the chosen series.
_DEFER_SIZE = "4 KB"
# Threads for header parsing and pixel decoding, at most one per CPU: pydicom's parsing holds the GIL, so
# threads gain only on file reads and numpy copies (Testing/benchmarks/bench_dicom_read.py).
_MAX_WORKERS = 8
# Geometry tolerances.
_MAX_TILT_DEG = 1.0  # slice normal or slice stacking farther than this from patient z / the normal: refuse
_DUPLICATE_MM = 1e-3  # two slices closer than this along the normal sit at the same position
_GAP_FACTOR = 1.5  # an increment above 1.5x the usual one means missing slices
_JITTER_FRACTION = 0.01  # increments varying by more than 1% of the usual one get a warning
_SAME_COSINE = 1e-4
_SAME_SPACING_MM = 1e-4


@dataclass(frozen=True)
class SeriesSummary:
    """One image series found under a folder (what `list_series` returns), with the header facts that
    `choose_series` weighs (from its first file; coverage from all its slice positions)."""

    series_instance_uid: str
    description: str
    modality: str
    n_slices: int
    series_number: int | None
    patient_id: str | None
    folder: Path  # folder of its first file
    slice_thickness_mm: float | None = None
    kvp: float | None = None
    image_type: tuple[str, ...] = ()
    contrast_agent: str = ""  # ContrastBolusAgent
    protocol_name: str = ""
    axial: bool = True  # slice normal within 1 degree of the patient z axis
    frames: int = 1
    coverage_mm: float = 0.0  # extent of the slice positions along the slice normal

    def describe(self) -> str:
        facts = [self.modality, f"{self.n_slices} slices"]
        if self.slice_thickness_mm is not None:
            facts.append(f"{self.slice_thickness_mm:g} mm")
        if self.kvp is not None:
            facts.append(f"{self.kvp:g} kVp")
        return f"{self.series_instance_uid} '{self.description}' ({', '.join(facts)})"


@dataclass(frozen=True)
class SeriesChoice:
    """Which series of a folder was read, how it was chosen, and why the others were passed over."""

    chosen: SeriesSummary
    how: str  # "automatic" (among several), "only" (the folder's single series) or "given" (by its UID)
    reason: str
    passed_over: tuple[tuple[SeriesSummary, str], ...] = ()
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        chosen = self.chosen
        return {
            "series_instance_uid": chosen.series_instance_uid,
            "description": chosen.description,
            "slice_thickness_mm": chosen.slice_thickness_mm,
            "kvp": chosen.kvp,
            "n_slices": chosen.n_slices,
            "coverage_mm": round(chosen.coverage_mm, 1),
            "selection": self.how,
            "reason": self.reason,
            "passed_over": [
                {"series_instance_uid": s.series_instance_uid, "description": s.description, "reason": why}
                for s, why in self.passed_over
            ],
        }


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


def _files_under(folder: Path) -> Iterator[Path]:
    """The files under `folder` in sorted order, found as they are walked."""
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        yield from (Path(root) / name for name in sorted(names))


def default_workers() -> int:
    """Threads for reading a series: one per CPU this process may use, at most _MAX_WORKERS."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(_MAX_WORKERS, cpus))


def _scan(folder: Path, workers: int) -> _Scan:
    if not folder.exists():
        raise InputError(f"{folder} does not exist; check the path")
    files = list(_files_under(folder))
    if not files:
        raise InputError(f"folder {folder} is empty; point to a folder of DICOM slices")
    with ThreadPoolExecutor(workers) as pool:
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


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _slice_normal(ds: Dataset) -> np.ndarray | None:
    try:
        cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    normal = np.cross(cosines[:3], cosines[3:6]) if cosines.size == 6 else np.zeros(3)
    length = np.linalg.norm(normal)
    return normal / length if length > 0 else None


def _coverage_mm(members: list[tuple[Path, Dataset]], normal: np.ndarray | None) -> float:
    if normal is None:
        return 0.0
    distances = []
    for _, ds in members:
        try:
            distances.append(np.array([float(v) for v in ds.ImagePositionPatient]) @ normal)
        except (AttributeError, TypeError, ValueError):
            continue
    return float(max(distances) - min(distances)) if distances else 0.0


def _summary(uid: str, members: list[tuple[Path, Dataset]]) -> SeriesSummary:
    first = members[0][1]
    number = first.get("SeriesNumber")
    normal = _slice_normal(first)
    image_type = first.get("ImageType") or ()
    return SeriesSummary(
        series_instance_uid=uid or "(no SeriesInstanceUID)",
        description=str(first.get("SeriesDescription", "")),
        modality=str(first.get("Modality", "")),
        n_slices=len(members),
        series_number=int(number) if number not in (None, "") else None,
        patient_id=str(first.PatientID) if "PatientID" in first else None,
        folder=members[0][0].parent,
        slice_thickness_mm=_float(first, "SliceThickness"),
        kvp=_float(first, "KVP"),
        image_type=tuple(str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)),
        contrast_agent=str(first.get("ContrastBolusAgent") or "").strip(),
        protocol_name=str(first.get("ProtocolName") or "").strip(),
        axial=normal is not None and np.degrees(np.arccos(min(1.0, abs(normal[2])))) <= _MAX_TILT_DEG,
        frames=int(first.get("NumberOfFrames") or 1),
        coverage_mm=_coverage_mm(members, normal),
    )


def _series_order(s: SeriesSummary) -> tuple:
    return s.series_number is None, s.series_number or 0, s.series_instance_uid


def _summaries(scan: _Scan) -> dict[str, SeriesSummary]:
    """Summary per key of `scan.series`, by series number."""
    summaries = {uid: _summary(uid, members) for uid, members in scan.series.items()}
    return dict(sorted(summaries.items(), key=lambda item: _series_order(item[1])))


def list_series(folder: str | Path) -> list[SeriesSummary]:
    """Summaries of the DICOM image series under `folder` (searched recursively), by series number."""
    return list(_summaries(_scan(Path(folder), default_workers())).values())


# Series-description hints (lower case). Negations first: "non-contrast" is not a contrast hint.
_LOCALIZER_WORDS = re.compile(r"\b(scout|topogram|locali[sz]er|surview|scanogram|survey)\b")
_NO_CONTRAST_WORDS = re.compile(r"\b(non[- ]?contrast|no contrast|w/?o contrast|without contrast|unenhanced|nativ)")
_CONTRAST_WORDS = re.compile(r"(cta\b|angio|contrast|\bc\+)")
_CALCIUM_WORDS = re.compile(r"\b(ca[ _-]?sc(ore)?|calcium|cac|agatston)\b")
_PREFERRED_THICKNESS_MM = (2.5, 3.0)
_PREFERRED_KVP = 120.0


def _unsuitable(s: SeriesSummary) -> str | None:
    """Why `s` cannot be a non-contrast axial calcium-score CT, or None."""
    description = s.description.lower()
    if s.modality and s.modality != "CT":
        return f"modality {s.modality}, not CT"
    if "LOCALIZER" in s.image_type or _LOCALIZER_WORDS.search(description):
        return "a localizer (scout)"
    if s.frames > 1:
        return "multi-frame (enhanced) images, which the reader does not take"
    if s.n_slices < 2:
        return "a single image"
    if not s.axial:
        return "not axial (a reformat, a tilted gantry or no ImageOrientationPatient)"
    if s.contrast_agent:
        return f"contrast-enhanced (ContrastBolusAgent '{s.contrast_agent}')"
    if _CONTRAST_WORDS.search(description) and not _NO_CONTRAST_WORDS.search(description):
        return "contrast-enhanced by its description (CTA/angio/contrast)"
    return None


def _thickness_off(s: SeriesSummary) -> float:
    """Distance of the slice thickness from the preferred 2.5-3 mm (inf when unknown)."""
    if s.slice_thickness_mm is None:
        return np.inf
    low, high = _PREFERRED_THICKNESS_MM
    return round(max(low - s.slice_thickness_mm, s.slice_thickness_mm - high, 0.0), 2)


def _preferences(s: SeriesSummary) -> list[tuple[float, str]]:
    """(shortfall, what it is) per preference in priority order; shortfall 0 meets the preference."""
    thickness = "unknown" if s.slice_thickness_mm is None else f"{s.slice_thickness_mm:g} mm"
    kvp = "unknown" if s.kvp is None else f"{s.kvp:g}"
    return [
        (_thickness_off(s), f"slice thickness {thickness} (2.5-3 mm preferred)"),
        (float(s.kvp is None or abs(s.kvp - _PREFERRED_KVP) > 0.5), f"kVp {kvp} (120 kVp preferred)"),
        (float(not _named_calcium(s)), "neither its description nor its protocol names a calcium score"),
        (-round(s.coverage_mm), f"covers less along z ({s.coverage_mm:.0f} mm)"),
        (-s.n_slices, f"fewer slices ({s.n_slices})"),
    ]


def _named_calcium(s: SeriesSummary) -> bool:
    # The protocol too: Canon names its calcium series "Cardiac 3.000" under protocol "Calcium Score (Volume)".
    # Only the description hints contrast, as a protocol spans a study's CTA and calcium series alike.
    return bool(_CALCIUM_WORDS.search(f"{s.description} | {s.protocol_name}".lower()))


def _rank(s: SeriesSummary) -> tuple:
    return *(shortfall for shortfall, _ in _preferences(s)), *_series_order(s)


def _passed_over_because(s: SeriesSummary, chosen: SeriesSummary) -> str:
    for (mine, what), (theirs, _) in zip(_preferences(s), _preferences(chosen), strict=True):
        if mine > theirs:
            return what
    return "the same facts; the lower series number was taken"


def choose_series(summaries: list[SeriesSummary]) -> SeriesChoice:
    """The non-contrast calcium-score series among `summaries`: an axial CT that is no localizer and shows
    no sign of contrast (ContrastBolusAgent, or CTA/angio/contrast in its description); among those the
    one nearest 2.5-3 mm slices, then at 120 kVp, then named as a calcium score (CaSc, calcium, CAC,
    Agatston in its description or protocol), then covering the longest stretch along z, then with the
    most slices, then the lowest series number and UID, so the choice is deterministic."""
    if len(summaries) == 1:
        return SeriesChoice(summaries[0], "only", "the only image series", warnings=_caveats(summaries[0]))
    unsuitable = {s.series_instance_uid: _unsuitable(s) for s in summaries}
    candidates = sorted((s for s in summaries if unsuitable[s.series_instance_uid] is None), key=_rank)
    if not candidates:
        listing = "; ".join(f"{s.describe()}: {unsuitable[s.series_instance_uid]}" for s in summaries)
        raise InputError(
            f"none of the {len(summaries)} image series is a non-contrast axial CT ({listing}); "
            "choose one by its SeriesInstanceUID (cacscoring score --series UID)"
        )
    chosen = candidates[0]
    facts = [f"{chosen.slice_thickness_mm:g} mm" if chosen.slice_thickness_mm is not None else "thickness unknown",
             f"{chosen.kvp:g} kVp" if chosen.kvp is not None else "kVp unknown",
             f"{chosen.n_slices} slices over {chosen.coverage_mm:.0f} mm"]
    if _named_calcium(chosen):
        facts.append("named as a calcium score")
    passed_over = tuple(
        (s, unsuitable[s.series_instance_uid] or _passed_over_because(s, chosen))
        for s in summaries if s is not chosen
    )
    reason = f"non-contrast axial CT ({', '.join(facts)}), the best of {len(summaries)} series"
    return SeriesChoice(chosen, "automatic", reason, passed_over)


def _caveats(s: SeriesSummary) -> list[str]:
    """A warning when a series read without a choice (the only one, or given by UID) looks unsuitable."""
    why = _unsuitable(s)
    return [] if why is None else [f"the series is {why}; calcium scores need a non-contrast axial CT"]


def _pick_series(scan: _Scan, folder: Path, series_uid: str | None) -> tuple[SeriesChoice, list]:
    summaries = _summaries(scan)
    if series_uid is not None:
        if series_uid not in scan.series:
            listing = "; ".join(s.describe() for s in summaries.values())
            raise InputError(f"series {series_uid} is not in {folder}; the series there are: {listing}")
        chosen = summaries[series_uid]
        choice = SeriesChoice(chosen, "given", "chosen by its SeriesInstanceUID", warnings=_caveats(chosen))
        return choice, scan.series[series_uid]
    choice = choose_series(list(summaries.values()))
    key = next(uid for uid, summary in summaries.items() if summary is choice.chosen)
    return choice, scan.series[key]


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
        # view_only: no copy of the stored values, and none cached on the dataset; they are copied into `out`.
        stored = pixel_array(ds, view_only=True)
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


def read_dicom_series(folder: str | Path, series_uid: str | None = None, workers: int | None = None) -> CTVolume:
    """Read one CT series from a DICOM folder tree as a CTVolume in HU (see `read_ct`).

    `workers` threads parse the headers and decode the slices (default `default_workers()`; 1 reads
    serially); the result does not depend on it.
    """
    folder = Path(folder)
    workers = default_workers() if workers is None else max(1, int(workers))
    scan = _scan(folder, workers)
    choice, members = _pick_series(scan, folder, series_uid)
    _check_uniform(members)
    warnings: list[str] = list(choice.warnings)
    row, column, normal, pixel_spacing = _geometry(members)
    order, positions, increment = _order_and_increment(members, normal, warnings)
    members = [members[i] for i in order]

    first = members[0][1]
    array = np.empty((len(members), int(first.Rows), int(first.Columns)), dtype=np.float32)
    if "RescaleSlope" not in first or "RescaleIntercept" not in first:
        warnings.append("RescaleSlope/RescaleIntercept missing; taking stored pixel values as HU")
    with ThreadPoolExecutor(workers) as pool:
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
        series_instance_uid=str(first.get("SeriesInstanceUID", "")) or None,
        series_choice=choice.to_dict(),
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


def study_uid_under(folder: str | Path) -> str | None:
    """StudyInstanceUID of the first DICOM file under `folder` (walked in sorted order); None when there is none."""
    for path in _files_under(Path(folder)):
        try:
            ds = _read_header(path)
        except InputError:  # unreadable or corrupt: the reader names it when the case is read
            return None
        if ds is not None:
            return str(ds.get("StudyInstanceUID", "")) or None
    return None
