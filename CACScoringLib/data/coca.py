"""Stanford COCA import into a training folder.

Gated: per-patient calcium XML (Apple plist) + DICOM series -> image/label NIfTI pairs. Layout read:
`<root>/Gated_release_final/patient/<pid>/**/*.dcm` and `<root>/Gated_release_final/calcium_xml/<pid>.xml`
(`root` may also be the Gated_release_final folder itself).
Non-gated: DICOM series + scores.xlsx -> image-only cases with the spreadsheet's per-vessel Agatston scores.

Conventions (documented in docs/training.md "Data import"):
- ROI -> slice: the z of Point_mm, projected on the slice normal, picks the nearest slice within half the
  increment; without Point_mm, ImageIndex i -> the (n-1-i)-th slice in position order (array index n-1-i).
- Point_px "(x, y)" are pixel coordinates with integer values at pixel centres; polygons are filled with
  `skimage.draw.polygon` (pixels whose centres lie inside or on the outline). A polygon too thin to cover any
  pixel centre marks the pixels under its vertices.
- Two arteries claiming one pixel: the higher label id keeps it (order-independent); the report counts it.
- Area check: |pixels - Area/pixel_area| may be up to half the outline length in pixels + 1 (the
  discretisation error of a filled polygon, Pick's theorem) plus `area_rel_tolerance` of the expected count.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring
from skimage.draw import polygon as fill_polygon
from tqdm import tqdm

from ..errors import InputError
from ..io import list_series, read_ct, write_image, write_labels
from ..labels import ARTERY_BY_ID, coca_roi_to_label
from ..scoring import ScoringParams, score_volume
from ..volume import CTVolume
from .manifest import ManifestCase, reference_scores_from_result, safe_case_name, write_manifest
from .scores_xlsx import read_scores_xlsx

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


# ---------------------------------------------------------------------------------------------- plist


_MAX_PLIST_DEPTH = 64  # COCA files nest 6 levels; a deeper file is not one (and would exhaust the stack)


def _plist_value(element: ET.Element, depth: int = 0):
    if depth > _MAX_PLIST_DEPTH:
        raise InputError(
            f"calcium XML nests values more than {_MAX_PLIST_DEPTH} levels deep; use the original COCA file"
        )
    tag = element.tag
    if tag == "dict":
        children = list(element)
        if len(children) % 2:
            raise InputError("calcium XML has a <dict> with a key and no value; use the original COCA file")
        result = {}
        for key, value in zip(children[::2], children[1::2], strict=True):
            if key.tag != "key":
                raise InputError(
                    f"calcium XML has <{key.tag}> where a <key> belongs; use the original COCA file"
                )
            result[key.text or ""] = _plist_value(value, depth + 1)
        return result
    if tag == "array":
        return [_plist_value(child, depth + 1) for child in element]
    text = (element.text or "").strip()
    try:
        if tag == "integer":
            return int(text)
        if tag == "real":
            return float(text)
    except ValueError as error:
        raise InputError(
            f"calcium XML has <{tag}>{text}</{tag}>, not a number; use the original COCA file"
        ) from error
    if tag == "true":
        return True
    if tag == "false":
        return False
    if tag in ("string", "date", "data"):
        return element.text or ""
    raise InputError(f"calcium XML has an unknown plist element <{tag}>; is it an Apple plist?")


def parse_plist(data: bytes | str):
    """Values of an XML Apple plist, parsed without entity expansion or external references.

    A DOCTYPE is allowed (COCA files carry Apple's), entity declarations are refused (billion-laughs bombs).
    """
    try:
        root = defused_fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise InputError(
            f"calcium XML refused: it declares entities or external references ({type(error).__name__}); "
            "COCA files have none, use the original file"
        ) from error
    except ET.ParseError as error:
        raise InputError(f"calcium XML is not well-formed ({error}); use the original COCA file") from error
    if root.tag == "plist":
        children = list(root)
        if len(children) != 1:
            raise InputError("calcium XML <plist> must hold exactly one value; use the original COCA file")
        root = children[0]
    return _plist_value(root)


# ------------------------------------------------------------------------------------------------ ROIs


@dataclass
class CocaRoi:
    ordinal: int  # position in the file (0-based), for reports
    image_index: int | None
    name: str
    points_px: np.ndarray  # (n, 2) x, y
    points_mm: np.ndarray | None  # (n, 3) x, y, z, or None when absent
    area_mm2: float | None
    mean_hu: float | None = None  # OsiriX's mean HU inside the ROI: identifies the CT it was drawn on


def _finite_number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    return None


def _points(values, dims: int) -> np.ndarray | None:
    """Parse ["(x, y)", ...] strings into an (n, dims) array; None when any point is malformed or not finite."""
    if not isinstance(values, list):
        return None
    points = []
    for value in values:
        numbers = _NUMBER.findall(str(value))
        if len(numbers) != dims:
            return None
        points.append([float(n) for n in numbers])
    points = np.asarray(points, dtype=float).reshape(-1, dims)
    return points if np.isfinite(points).all() else None  # e.g. 1e999 reads as inf


def read_calcium_xml(source: str | Path | bytes) -> tuple[list[CocaRoi], list[dict]]:
    """ROIs of a COCA calcium XML, plus the entries that could not be read (with reasons).

    `source` is a path or the file's bytes.
    """
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    document = parse_plist(data)
    if not isinstance(document, dict) or not isinstance(document.get("Images"), list):
        raise InputError("calcium XML has no Images list; is it a COCA calcium XML?")
    rois: list[CocaRoi] = []
    unreadable: list[dict] = []
    ordinal = 0
    for position, image in enumerate(document["Images"]):
        image = image if isinstance(image, dict) else {}
        index = image.get("ImageIndex")
        index = index if isinstance(index, int) and not isinstance(index, bool) else None
        image_rois = image.get("ROIs") or []
        if not isinstance(image_rois, list):
            unreadable.append({"image": position, "image_index": index,
                               "reason": f"ROIs is {type(image_rois).__name__}, not a list of ROIs"})
            continue
        for roi in image_rois:
            roi = roi if isinstance(roi, dict) else {}
            name = str(roi.get("Name", "")).strip()
            points_px = _points(roi.get("Point_px", []), 2)
            points_mm = _points(roi["Point_mm"], 3) if "Point_mm" in roi else None
            record = {"roi": ordinal, "image_index": index, "name": name}
            if points_px is None:
                unreadable.append({**record, "reason": "Point_px is not a list of finite '(x, y)' points"})
            elif "Point_mm" in roi and points_mm is None:
                unreadable.append({**record, "reason": "Point_mm is not a list of finite '(x, y, z)' points"})
            elif points_mm is not None and len(points_mm) != len(points_px):
                unreadable.append({**record, "reason": "Point_mm and Point_px differ in length"})
            else:
                rois.append(
                    CocaRoi(
                        ordinal=ordinal,
                        image_index=index,
                        name=name,
                        points_px=points_px,
                        points_mm=points_mm if points_mm is not None and len(points_mm) else None,
                        area_mm2=_finite_number(roi.get("Area")),
                        mean_hu=_finite_number(roi.get("Mean")),
                    )
                )
            ordinal += 1
    return rois, unreadable


# ------------------------------------------------------------------------------------------ rasterising


@dataclass
class RasterReport:
    imported: list[dict] = field(default_factory=list)  # {"roi", "name", "artery", "slice", "pixels", "by"}
    skipped: list[dict] = field(default_factory=list)  # {"roi", "image_index", "name", "reason"}
    area_mismatches: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)  # {"slice", "labels", "kept", "pixels"}
    image_index_disagreements: list[dict] = field(default_factory=list)  # Point_mm slice != ImageIndex slice

    def to_dict(self) -> dict:
        return {
            "rois_imported": self.imported,
            "rois_skipped": self.skipped,
            "area_mismatches": self.area_mismatches,
            "conflicts": self.conflicts,
            "image_index_disagreements": self.image_index_disagreements,
        }


def slice_coordinate(ct: CTVolume, points_mm: np.ndarray) -> np.ndarray:
    """Continuous slice index (array axis 0) of physical points: their offset along the slice normal."""
    direction = np.asarray(ct.direction, dtype=float).reshape(3, 3)
    normal = direction[:, 2]
    return (np.asarray(points_mm, dtype=float) - np.asarray(ct.origin, dtype=float)) @ normal / ct.spacing[2]


def roi_slice(ct: CTVolume, roi: CocaRoi) -> tuple[int | None, str, str | None]:
    """(slice index, how it was found, reason when not found) for one ROI."""
    n = ct.shape[0]
    if roi.points_mm is not None:
        k = float(np.median(slice_coordinate(ct, roi.points_mm)))
        nearest = int(np.floor(k + 0.5))
        if 0 <= nearest < n:  # rounding keeps |k - nearest| <= 0.5, i.e. within half the increment
            return nearest, "Point_mm", None
        return None, "Point_mm", f"Point_mm z lies {k:.2f} slices along the series, outside 0..{n - 1}"
    if roi.image_index is None:
        return None, "ImageIndex", "no Point_mm and no ImageIndex"
    if not 0 <= roi.image_index < n:
        return None, "ImageIndex", f"ImageIndex {roi.image_index} is outside a series of {n} slices"
    return n - 1 - roi.image_index, "ImageIndex", None


def _fill(points_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    columns, rows = points_px[:, 0], points_px[:, 1]
    rr, cc = fill_polygon(rows, columns, shape)
    mask[rr, cc] = True
    if not mask.any():
        vertex_rows = np.floor(rows + 0.5).astype(int)
        vertex_columns = np.floor(columns + 0.5).astype(int)
        inside = (
            (vertex_rows >= 0)
            & (vertex_rows < shape[0])
            & (vertex_columns >= 0)
            & (vertex_columns < shape[1])
        )
        mask[vertex_rows[inside], vertex_columns[inside]] = True
    return mask


def _outline_length(points_px: np.ndarray) -> float:
    closed = np.vstack([points_px, points_px[:1]])
    return float(np.linalg.norm(np.diff(closed, axis=0), axis=1).sum())


def rasterize_rois(
    rois: list[CocaRoi], ct: CTVolume, area_rel_tolerance: float = 0.1
) -> tuple[np.ndarray, RasterReport]:
    """Label map (uint8, the CT's shape) of the ROIs, and what was imported, skipped and flagged."""
    names = coca_roi_to_label()
    labels = np.zeros(ct.shape, dtype=np.uint8)
    report = RasterReport()
    plane = ct.shape[1:]
    for roi in rois:
        record = {"roi": roi.ordinal, "image_index": roi.image_index, "name": roi.name}
        label = names.get(roi.name)
        if label is None:
            report.skipped.append({**record, "reason": f"unknown ROI name {roi.name!r}"})
            continue
        if len(roi.points_px) == 0:
            report.skipped.append({**record, "reason": "empty ROI (no points)"})
            continue
        k, found_by, reason = roi_slice(ct, roi)
        if k is None:
            report.skipped.append({**record, "reason": reason})
            continue
        if found_by == "Point_mm" and roi.image_index is not None:
            by_index = ct.shape[0] - 1 - roi.image_index
            if by_index != k:
                report.image_index_disagreements.append(
                    {**record, "slice": k, "slice_by_image_index": by_index}
                )
        mask = _fill(roi.points_px, plane)
        pixels = int(mask.sum())
        if pixels == 0:
            report.skipped.append({**record, "reason": "empty ROI (outline outside the image)"})
            continue
        if roi.area_mm2 is not None:
            expected = roi.area_mm2 / ct.pixel_area_mm2
            allowed = _outline_length(roi.points_px) / 2 + 1 + area_rel_tolerance * expected
            if abs(pixels - expected) > allowed:
                report.area_mismatches.append(
                    {
                        **record,
                        "slice": k,
                        "pixels": pixels,
                        "expected_pixels": round(expected, 2),
                        "allowed_difference": round(allowed, 2),
                    }
                )
        current = labels[k][mask]
        clash = (current != 0) & (current != label)
        if clash.any():
            for other in np.unique(current[clash]):
                report.conflicts.append(
                    {
                        "slice": k,
                        "labels": sorted([ARTERY_BY_ID[int(other)], ARTERY_BY_ID[label]]),
                        "kept": ARTERY_BY_ID[max(int(other), label)],
                        "pixels": int((current[clash] == other).sum()),
                    }
                )
        labels[k][mask] = np.maximum(current, label)
        report.imported.append(
            {**record, "artery": ARTERY_BY_ID[label], "slice": k, "pixels": pixels, "by": found_by}
        )
    return labels, report


# ----------------------------------------------------------------------------------------- whole import


def find_gated_folders(root: str | Path) -> tuple[Path, Path]:
    """(patient folder, calcium_xml folder) of a COCA gated release under `root`."""
    root = Path(root)
    for base in (root / "Gated_release_final", root):
        if (base / "patient").is_dir() and (base / "calcium_xml").is_dir():
            return base / "patient", base / "calcium_xml"
    raise InputError(
        f"{root} has no Gated_release_final/patient and calcium_xml folders; "
        "point to the COCA download (or its Gated_release_final folder)"
    )


def _hu_agrees(measured: float, expected: float) -> bool:
    """OsiriX and our polygon fill may take different edge pixels: agree within 10 HU + 10%."""
    return abs(measured - expected) <= 10.0 + 0.1 * abs(expected)


def _series_evidence(ct: CTVolume, rois: list[CocaRoi]) -> tuple[int, int, int]:
    """(ROIs landing inside the series, ROIs with a mean HU, of those the ones whose mean HU agrees here)."""
    names = coca_roi_to_label()
    inside = checked = agreeing = 0
    for roi in rois:
        k = roi_slice(ct, roi)[0] if roi.name in names else None
        if k is None:
            continue
        inside += 1
        mask = _fill(roi.points_px, ct.shape[1:]) if roi.mean_hu is not None else None
        if mask is not None and mask.any():
            checked += 1
            agreeing += _hu_agrees(float(ct.array[k][mask].mean()), roi.mean_hu)
    return inside, checked, agreeing


def choose_series(dicom_folder: Path, rois: list[CocaRoi], patient_id: str | None = None
                  ) -> tuple[CTVolume, list[dict]]:
    """Read the series of a patient that the XML was drawn on, and a note per candidate series.

    Series whose DICOM PatientID is `patient_id` (the folder's and XML's name) come first when there are any.
    Then: most ROIs inside the series, most ROIs whose mean HU (the XML's "Mean") agrees with the CT there,
    most slices, smallest SeriesInstanceUID. Geometry alone cannot tell two patients apart, so an InputError
    (the patient is skipped) when the best series ties on ROIs and HU with a series of another PatientID, or
    when the XML's mean HU agree with none of its ROIs on the chosen series.
    """
    candidates = []
    notes = []
    for summary in list_series(dicom_folder):
        uid = summary.series_instance_uid
        try:
            ct = read_ct(dicom_folder, series_uid=uid)
        except InputError as error:
            notes.append({"series_instance_uid": uid, "slices": summary.n_slices, "rejected": str(error)})
            continue
        inside, checked, agreeing = _series_evidence(ct, rois)
        notes.append({"series_instance_uid": uid, "patient_id": ct.info.patient_id, "slices": ct.shape[0],
                      "rois_inside": inside, "rois_hu_checked": checked, "rois_hu_agreeing": agreeing})
        candidates.append(((-inside, -agreeing, -ct.shape[0], uid), ct, (checked, agreeing)))
    if not candidates:
        reasons = "; ".join(note["rejected"] for note in notes)
        raise InputError(f"no readable CT series under {dicom_folder}: {reasons}")
    own = [c for c in candidates if patient_id is not None and c[1].info.patient_id == patient_id]
    pool = sorted(own or candidates, key=lambda candidate: candidate[0])
    (best_key, best, (checked, agreeing)), others = pool[0], pool[1:]
    rivals = [ct for key, ct, _ in others if key[:2] == best_key[:2] and ct.info.patient_id != best.info.patient_id]
    if rivals:
        listed = ", ".join(f"{ct.info.series_instance_uid} (PatientID {ct.info.patient_id})" for ct in [best, *rivals])
        raise InputError(
            f"series of different patients fit the calcium XML equally under {dicom_folder}: {listed}; "
            "cannot tell which one it was drawn on: remove the other patients' series from the folder"
        )
    if checked and not agreeing:
        raise InputError(
            f"the mean HU of none of the {checked} calcium ROIs matches series {best.info.series_instance_uid} "
            f"under {dicom_folder}: the XML was drawn on another CT; check the patient's folder"
        )
    return best, notes


def _write_case(ct, labels, case_id, output: Path, scoring_params, patient_id=None):
    name = safe_case_name(case_id)
    image_path = output / "images" / f"{name}.nii.gz"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    write_image(ct, image_path)
    labels_path = None
    scores = {}
    if labels is not None:
        labels_path = output / "labels" / f"{name}.nii.gz"
        labels_path.parent.mkdir(parents=True, exist_ok=True)
        write_labels(labels, ct, labels_path)
        scores = reference_scores_from_result(score_volume(ct, labels, scoring_params))
    return ManifestCase(
        id=case_id,
        image=image_path,
        labels=labels_path,
        spacing=tuple(ct.spacing),
        shape=tuple(ct.shape),
        reference_scores=scores,
        patient_id=patient_id or case_id,
    )


def _import_patient(pid, patient_dir, xml_dir, output, missing_xml_as_negative, area_rel_tolerance, params):
    entry: dict = {"id": pid, "status": "skipped"}
    xml_path = xml_dir / f"{pid}.xml"
    dicom_folder = patient_dir / pid
    if not dicom_folder.is_dir():
        entry["reason"] = f"no DICOM folder patient/{pid}"
        return None, entry
    if xml_path.is_file():
        rois, unreadable = read_calcium_xml(xml_path)
        if unreadable:  # a label map without those ROIs would teach that calcium is background
            entry.update(unreadable_rois=unreadable, reason=f"{len(unreadable)} ROI entries of calcium_xml/{pid}.xml "
                         f"cannot be read (first: {unreadable[0]['reason']}); fix or replace the XML")
            return None, entry
    elif missing_xml_as_negative:
        rois = []
        entry["note"] = "no calcium XML: imported as a patient without calcium"
    else:
        entry["reason"] = f"no calcium XML calcium_xml/{pid}.xml (use --missing-xml-as-negative to import it)"
        return None, entry
    ct, series_notes = choose_series(dicom_folder, rois, patient_id=pid)
    labels, raster = rasterize_rois(rois, ct, area_rel_tolerance)
    case = _write_case(ct, labels, pid, output, params)
    entry.update(
        status="imported",
        series_instance_uid=ct.info.series_instance_uid,
        series_candidates=series_notes,
        slices=ct.shape[0],
        unreadable_rois=[],
        **raster.to_dict(),
        reference_scores=case.reference_scores,
        reader_warnings=list(ct.info.warnings),
    )
    return case, entry


def summarize(entries: list[dict]) -> dict:
    """Counts over the per-patient report entries."""
    imported = [e for e in entries if e["status"] == "imported"]

    def total(key):
        return sum(len(e.get(key, [])) for e in imported)

    return {
        "patients": len(entries),
        "imported": len(imported),
        "skipped": len(entries) - len(imported),
        "rois_imported": total("rois_imported"),
        "rois_skipped": total("rois_skipped") + total("unreadable_rois"),
        "area_mismatches": total("area_mismatches"),
        "conflicts": total("conflicts"),
        "image_index_disagreements": total("image_index_disagreements"),
    }


def import_coca_gated(
    root: str | Path,
    output: str | Path,
    patients: list[str] | None = None,
    missing_xml_as_negative: bool = False,
    area_rel_tolerance: float = 0.1,
    scoring_params=None,
    progress: bool = True,
) -> dict:
    """Import the COCA gated set into a training folder (images/, labels/, manifest.json, report.json).

    A patient whose data cannot be used is skipped with its reason; the returned report (also written to
    report.json) lists per patient what was imported, skipped and flagged.
    """
    patient_dir, xml_dir = find_gated_folders(root)
    output = Path(output)
    params = scoring_params or ScoringParams()
    found = {p.name for p in patient_dir.iterdir() if p.is_dir()} | {p.stem for p in xml_dir.glob("*.xml")}
    ids = sorted(found) if patients is None else list(dict.fromkeys(patients))
    cases, entries = [], []
    for pid in tqdm(ids, desc="COCA gated", unit="patient", disable=not progress):
        if pid not in found:
            entries.append(
                {"id": pid, "status": "skipped", "reason": "no DICOM folder and no XML for this id"}
            )
            continue
        try:
            case, entry = _import_patient(
                pid, patient_dir, xml_dir, output, missing_xml_as_negative, area_rel_tolerance, params
            )
        except InputError as error:
            case, entry = None, {"id": pid, "status": "skipped", "reason": str(error)}
        except Exception as error:  # one bad patient never aborts the import; the report names it
            case, entry = None, {"id": pid, "status": "skipped", "reason": f"{type(error).__name__}: {error}"}
        entries.append(entry)
        if case is not None:
            cases.append(case)
    report = {"source": "coca-gated", "root": str(Path(root).resolve()), "summary": summarize(entries)}
    report["patients"] = entries
    output.mkdir(parents=True, exist_ok=True)
    write_manifest(output, "coca-gated", cases)
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _folders_by_name(root: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for folder, dirs, _ in os.walk(root):
        dirs.sort()
        for name in dirs:
            index.setdefault(name, []).append(Path(folder) / name)
    return index


def import_coca_nongated(
    root: str | Path,
    output: str | Path,
    scores: str | Path | None = None,
    patients: list[str] | None = None,
    total_abs_tolerance: float = 1.0,
    total_rel_tolerance: float = 0.01,
    progress: bool = True,
) -> dict:
    """Import the COCA non-gated set: each scores.xlsx row's DICOM folder (named by its filename, anywhere
    under `root`) becomes an image-only case whose reference scores are the spreadsheet's Agatston scores.

    Rows whose total disagrees with the per-vessel sum are imported and flagged in the report.
    """
    root, output = Path(root), Path(output)
    if scores is None:
        found = sorted(root.rglob("scores.xlsx"))
        if not found:
            raise InputError(f"no scores.xlsx under {root}; pass the non-gated scores file with --scores")
        scores = found[0]
    rows = read_scores_xlsx(scores, total_abs_tolerance, total_rel_tolerance)
    if patients is not None:
        wanted = set(patients)
        rows = [row for row in rows if row.filename in wanted]
    folders = _folders_by_name(root)
    cases, entries = [], []
    for row in tqdm(rows, desc="COCA non-gated", unit="patient", disable=not progress):
        entry: dict = {"id": row.filename, "row": row.row, "status": "skipped", "problems": row.problems}
        entries.append(entry)
        candidates = folders.get(row.filename)
        if not candidates:
            entry["reason"] = f"no folder named {row.filename} under {root}"
            continue
        folder = min(candidates, key=lambda p: (len(p.parts), str(p)))  # the outermost one holds all files
        try:
            ct, series_notes = choose_series(folder, [], patient_id=row.filename)
        except InputError as error:
            entry["reason"] = str(error)
            continue
        name = safe_case_name(row.filename)
        image_path = write_image(ct, output / "images" / f"{name}.nii.gz")
        cases.append(
            ManifestCase(
                id=row.filename,
                image=image_path,
                labels=None,
                spacing=tuple(ct.spacing),
                shape=tuple(ct.shape),
                reference_scores=row.reference_scores(),
            )
        )
        entry.update(
            status="imported",
            series_instance_uid=ct.info.series_instance_uid,
            series_candidates=series_notes,
            slices=ct.shape[0],
            reference_scores=row.reference_scores(),
        )
    summary = {
        "patients": len(entries),
        "imported": len(cases),
        "skipped": len(entries) - len(cases),
        "rows_with_problems": sum(1 for e in entries if e["problems"]),
    }
    report = {
        "source": "coca-nongated",
        "root": str(root.resolve()),
        "scores": str(scores),
        "summary": summary,
    }
    report["patients"] = entries
    output.mkdir(parents=True, exist_ok=True)
    write_manifest(output, "coca-nongated", cases)
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
