"""The training-folder manifest: which image/label pairs a dataset holds, with geometry and reference scores.

`manifest.json` (version 1)::

    {"version": 1, "source": "coca-gated",
     "cases": [{"id": "p001", "patient_id": "p001",
                "image": "images/p001.nii.gz", "labels": "labels/p001.nii.gz",
                "spacing": [x, y, z], "shape": [z, y, x],
                "reference_scores": {"LM": {"agatston": .., "volume_mm3": ..}, ..., "total": {..}}}]}

Paths are relative to the manifest's folder; `labels` is null for cases that only carry scores (COCA
non-gated), and a score the source does not give (e.g. volume for non-gated) is left out. `shape` is the
array shape (z, y, x) of `CTVolume.shape`; `spacing` is (x, y, z) mm as in `CTVolume.spacing`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..labels import ARTERIES
from ..volume import check_spacing

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
SCORE_KEYS = (*ARTERIES, "total")


@dataclass
class ManifestCase:
    id: str
    image: Path  # absolute once loaded
    labels: Path | None
    spacing: tuple[float, float, float]  # (x, y, z) mm
    shape: tuple[int, int, int]  # (z, y, x)
    reference_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    patient_id: str | None = None  # for patient-wise splits; defaults to id


@dataclass
class Manifest:
    path: Path
    source: str
    cases: list[ManifestCase]

    @property
    def root(self) -> Path:
        return self.path.parent


def reference_scores_from_result(result) -> dict[str, dict[str, float]]:
    """Per-artery and total Agatston and volume of a `ScoreResult`, as the manifest stores them."""
    scores = {key: result.arteries[key] for key in ARTERIES}
    scores["total"] = result.total
    return {
        key: {"agatston": float(value.agatston), "volume_mm3": float(value.volume_mm3)}
        for key, value in scores.items()
    }


def safe_case_name(case_id: str) -> str:
    """A file-name-safe version of a case id (ids become output file names)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id) or "case"


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()


def write_manifest(path: str | Path, source: str, cases: list[ManifestCase]) -> Path:
    """Write `cases` to `path` (a manifest.json, or a folder that gets one); returns the file written."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [case.id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"case ids must be unique in a manifest; repeated: {', '.join(duplicates)}")
    root = path.parent
    entries = []
    for case in cases:
        entries.append(
            {
                "id": case.id,
                "patient_id": case.patient_id or case.id,
                "image": _relative(case.image, root),
                "labels": None if case.labels is None else _relative(case.labels, root),
                "spacing": [float(s) for s in case.spacing],
                "shape": [int(s) for s in case.shape],
                "reference_scores": case.reference_scores,
            }
        )
    document = {"version": MANIFEST_VERSION, "source": source, "cases": entries}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def _case_from_entry(entry: dict, root: Path, path: Path, check_files: bool) -> ManifestCase:
    missing = [key for key in ("id", "image", "spacing", "shape") if key not in entry]
    if missing:
        raise InputError(
            f"{path}: a case lacks {', '.join(missing)}; re-create the manifest with cacscoring import-*"
        )
    case_id = str(entry["id"])
    image = root / entry["image"]
    labels = None if entry.get("labels") is None else root / entry["labels"]
    if check_files:
        for file in (image, labels):
            if file is not None and not file.is_file():
                raise InputError(
                    f"{path}: case {case_id} names {file}, which does not exist; re-run the import"
                )
    spacing = check_spacing(entry["spacing"], f"{path}: case {case_id}", "re-run the import")
    try:
        shape = tuple(int(s) for s in entry["shape"])
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"{path}: case {case_id} needs 3 positive whole shape values; re-run the import")
    return ManifestCase(
        id=case_id,
        image=image,
        labels=labels,
        spacing=spacing,
        shape=shape,
        reference_scores=entry.get("reference_scores") or {},
        patient_id=str(entry.get("patient_id") or case_id),
    )


def load_manifest(path: str | Path, check_files: bool = True) -> Manifest:
    """Read a manifest.json (or the folder holding one); paths come back absolute."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"no manifest at {path}; create one with cacscoring import-coca or import-folder")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"{path} is not valid JSON ({error}); re-create it with cacscoring import-*"
        ) from error
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION:
        raise InputError(
            f"{path} is not a version {MANIFEST_VERSION} manifest; re-create it with cacscoring import-*"
        )
    root = path.parent.resolve()
    cases = [_case_from_entry(entry, root, path, check_files) for entry in document.get("cases", [])]
    ids = [case.id for case in cases]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path} repeats case ids; re-create it with cacscoring import-*")
    return Manifest(path=path.resolve(), source=str(document.get("source", "")), cases=cases)
