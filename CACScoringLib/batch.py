"""Cases in a folder, for batch scoring from the command line and from Slicer batch scripts.

A folder holds cases: image files (.nii, .nii.gz, .nrrd, .mha, ...) and subfolders (a DICOM series or
study each, whose series `read_ct` chooses); a folder with DICOM files only is one case, and so is a study
folder: subfolders holding the series of one study (a PACS export: scout, calcium score, CTA...).
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .io.dicom import study_uid_under
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
    folders = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if not cases and len(folders) > 1 and _one_study(folders):
        return [(source.name, source)]
    cases += [(p.name, p) for p in folders]
    return cases or [(source.name, source)]  # a folder of DICOM files is one case


def _one_study(folders: list[Path]) -> bool:
    """Whether the folders hold series of one DICOM study (one header each; stops at the first that differs)."""
    first = study_uid_under(folders[0])
    return first is not None and all(study_uid_under(folder) == first for folder in folders[1:])


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
