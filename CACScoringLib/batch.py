"""Cases in a folder, for batch scoring from the command line and from Slicer batch scripts.

A folder holds cases: image files (.nii, .nii.gz, .nrrd, .mha, ...) and subfolders (one DICOM series
each); a folder with DICOM files only is one case.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .io.images import IMAGE_SUFFIXES, image_suffix


def find_cases(source: Path) -> list[tuple[str, Path]]:
    """(case name, path) for each CT under `source`."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source} does not exist: give a CT file, a DICOM folder or a folder of cases")
    if source.is_file():
        return [(case_name(source), source)]
    entries = sorted(source.iterdir())
    cases = [(case_name(p), p) for p in entries if p.is_file() and image_suffix(p)]
    cases += [(p.name, p) for p in entries if p.is_dir() and not p.name.startswith(".")]
    return cases or [(source.name, source)]  # a folder of DICOM files is one case


def case_name(path: Path) -> str:
    suffix = image_suffix(path) if path.is_file() else None
    return path.name[: -len(suffix)] if suffix else path.stem


def labels_for(case: str, labels: Path | None, single: bool) -> Path | None:
    """The label map of `case`: `labels` itself for a single case, else <labels>/<case><suffix>."""
    if labels is None or labels.is_file():
        if labels is not None and not single:
            raise InputError("--labels is a file but the input holds several cases: give a folder of label maps")
        return labels
    for suffix in IMAGE_SUFFIXES + (".seg.nrrd",):
        candidate = labels / f"{case}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(f"no label map for case '{case}' in {labels} (expected {case}.nii.gz or similar)")
