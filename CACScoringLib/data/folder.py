"""Generic import: a folder of CT image / label map pairs into a training folder with a manifest.

Layouts accepted:
- nnU-Net raw: `imagesTr/<case>_0000<ending>`, `labelsTr/<case><ending>`, optional `dataset.json`
  (its `file_ending`, and its `labels` names, which are mapped onto the LM/LAD/LCX/RCA ids).
- simple: `images/<case><ending>` and `labels/<case><ending>` (an image may also be `<case>_0000<ending>`).
Every pair is read with `read_ct` and `read_labels` (grid and label values checked); a pair that fails is
skipped with its reason in report.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ..errors import InputError
from ..io import read_ct, read_labels, write_image, write_labels
from ..io.images import image_suffix, read_sitk_image
from ..labels import ARTERY_LABELS
from ..scoring import ScoringParams, score_volume
from .manifest import ManifestCase, reference_scores_from_result, safe_case_name, write_manifest

CHANNEL_SUFFIX = "_0000"


@dataclass
class CasePair:
    id: str
    image: Path
    labels: Path | None  # None: an image without a label map (reported, not imported)


def _contract_id(name: str) -> int | None:
    """Our label id for a dataset label name (key, full name or COCA ROI name; case-insensitive)."""
    wanted = name.strip().lower()
    if wanted in ("background", "bg"):
        return 0
    for artery in ARTERY_LABELS:
        if wanted in {artery.key.lower(), artery.name.lower(), *(n.lower() for n in artery.coca_roi_names)}:
            return artery.id
    return None


def dataset_json_label_map(dataset: dict, path: Path) -> dict[int, int] | None:
    """{dataset label value: our label id} from an nnU-Net dataset.json; None when it is already ours."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        return None
    pairs = []  # (name, value)
    for key, value in labels.items():
        if isinstance(value, str):  # nnU-Net v1: {"1": "LAD"}
            pairs.append((value, key))
        else:  # nnU-Net v2: {"LAD": 2}
            pairs.append((key, value))
    mapping = {}
    for name, value in pairs:
        if isinstance(value, list):
            raise InputError(f"{path}: label {name!r} is a region (list of ids); give one id per artery")
        ours = _contract_id(name)
        if ours is None:
            allowed = ", ".join(a.key for a in ARTERY_LABELS)
            raise InputError(
                f"{path}: label {name!r} is not background or one of {allowed}; relabel the dataset to "
                "per-artery labels"
            )
        mapping[int(value)] = ours
    return None if all(k == v for k, v in mapping.items()) else mapping


def _case_id(file: Path, ending: str) -> str:
    return file.name[: -len(ending)]


def find_pairs(folder: str | Path) -> tuple[str, list[CasePair], dict[int, int] | None, list[str]]:
    """(layout, pairs, label value map or None, notes) of an image/label folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a folder with imagesTr/labelsTr or images/labels")
    notes: list[str] = []
    mapping = None
    if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
        layout, images_dir, labels_dir = "nnunet", folder / "imagesTr", folder / "labelsTr"
        ending = ".nii.gz"
        dataset_path = folder / "dataset.json"
        if dataset_path.is_file():
            try:
                dataset = json.loads(dataset_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise InputError(f"{dataset_path} is not valid JSON ({error}); fix or remove it") from error
            ending = dataset.get("file_ending", ending)
            mapping = dataset_json_label_map(dataset, dataset_path)
            if mapping:
                notes.append(f"label values remapped by dataset.json: {mapping}")
        if (folder / "imagesTs").is_dir():
            notes.append("imagesTs ignored: only the training pairs (imagesTr/labelsTr) are imported")
        images = sorted(p for p in images_dir.iterdir() if p.name.endswith(ending))
        extra_channels = [p.name for p in images if not p.name.endswith(CHANNEL_SUFFIX + ending)]
        if extra_channels:
            notes.append(f"{len(extra_channels)} file(s) of channels other than {CHANNEL_SUFFIX} ignored")
        pairs = []
        for image in images:
            if image.name in extra_channels:
                continue
            case = _case_id(image, CHANNEL_SUFFIX + ending)
            label = labels_dir / f"{case}{ending}"
            pairs.append(CasePair(case, image, label if label.is_file() else None))
    elif (folder / "images").is_dir() and (folder / "labels").is_dir():
        layout, labels_dir = "images-labels", folder / "labels"
        pairs = []
        for image in sorted((folder / "images").iterdir()):
            ending = image_suffix(image)
            if ending is None:
                continue
            case = _case_id(image, ending)
            if case.endswith(CHANNEL_SUFFIX):
                case = case[: -len(CHANNEL_SUFFIX)]
            label = labels_dir / f"{case}{ending}"
            pairs.append(CasePair(case, image, label if label.is_file() else None))
    else:
        raise InputError(
            f"{folder} has neither imagesTr/ + labelsTr/ (nnU-Net) nor images/ + labels/; "
            "arrange the image and label files in one of these layouts"
        )
    if not pairs:
        raise InputError(f"no image files found in {folder} ({layout} layout); check the file endings")
    return layout, pairs, mapping, notes


def _remapped_labels(path: Path, mapping: dict[int, int], ct, scratch: Path) -> np.ndarray:
    """Labels with dataset values replaced by ours, then checked by read_labels (grid and values)."""
    image = read_sitk_image(path, "label map")
    values = sitk.GetArrayFromImage(image)
    present = [int(v) for v in np.unique(values)]
    unlisted = [v for v in present if v not in mapping]
    if unlisted:
        raise InputError(
            f"label map {path.name} holds value(s) {unlisted} that dataset.json does not list; "
            "add them to its labels or fix the label map"
        )
    remapped = np.zeros(values.shape, dtype=np.uint8)
    for source in present:
        remapped[values == source] = mapping[source]
    out = sitk.GetImageFromArray(remapped)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(scratch))
    try:
        return read_labels(scratch, ct)
    finally:
        scratch.unlink(missing_ok=True)


def import_folder(
    folder: str | Path, output: str | Path, scoring_params: ScoringParams | None = None, progress: bool = True
) -> dict:
    """Import image/label pairs into a training folder (images/, labels/, manifest.json, report.json)."""
    folder, output = Path(folder), Path(output)
    if output.resolve() == folder.resolve():
        raise InputError(f"output {output} is the input folder; choose another output folder")
    layout, pairs, mapping, notes = find_pairs(folder)
    params = scoring_params or ScoringParams()
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "labels").mkdir(parents=True, exist_ok=True)
    cases, entries = [], []
    for pair in tqdm(pairs, desc="import", unit="case", disable=not progress):
        entry = {"id": pair.id, "image": str(pair.image), "status": "skipped"}
        entries.append(entry)
        if pair.labels is None:
            entry["reason"] = "no label map with the same case name"
            continue
        entry["labels"] = str(pair.labels)
        name = safe_case_name(pair.id)
        try:
            ct = read_ct(pair.image)
            if mapping:
                labels = _remapped_labels(
                    pair.labels, mapping, ct, output / "labels" / f".{name}.remap.nii.gz"
                )
            else:
                labels = read_labels(pair.labels, ct)
        except InputError as error:
            entry["reason"] = str(error)
            continue
        image_path = write_image(ct, output / "images" / f"{name}.nii.gz")
        labels_path = write_labels(labels, ct, output / "labels" / f"{name}.nii.gz")
        scores = reference_scores_from_result(score_volume(ct, labels, params))
        cases.append(
            ManifestCase(
                id=pair.id,
                image=image_path,
                labels=labels_path,
                spacing=tuple(ct.spacing),
                shape=tuple(ct.shape),
                reference_scores=scores,
            )
        )
        entry.update(
            status="imported", labelled_voxels=int(np.count_nonzero(labels)), reference_scores=scores
        )
    source = f"folder:{layout}"
    write_manifest(output, source, cases)
    summary = {"cases": len(entries), "imported": len(cases), "skipped": len(entries) - len(cases)}
    report = {
        "source": source,
        "root": str(folder.resolve()),
        "notes": notes,
        "summary": summary,
        "cases": entries,
    }
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
