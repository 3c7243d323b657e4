"""Cases in a folder, for batch scoring from the command line and from Slicer batch scripts, and the output
folder's safety: atomic writes, a lock against a second run, fingerprints for resuming.

A folder holds cases: image files (.nii, .nii.gz, .nrrd, .mha, ...) and subfolders (a DICOM series or
study each, whose series `read_ct` chooses); a folder with DICOM files only is one case, and so is a study
folder: subfolders holding the series of one study (a PACS export: scout, calcium score, CTA...).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
from pathlib import Path

from .errors import InputError
from .io.dicom import study_uid_under
from .io.images import IMAGE_SUFFIXES, image_suffix

LOCK_NAME = ".cacscoring-batch.lock"


def find_cases(source: Path) -> list[tuple[str, Path]]:
    """(case name, path) for each CT under `source`; names are unique (they name result and label files)."""
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
    _refuse_shared_names(cases, source)
    return cases or [(source.name, source)]  # a folder of DICOM files is one case


def _one_study(folders: list[Path]) -> bool:
    """Whether the folders hold series of one DICOM study (one header each; stops at the first that differs)."""
    first = study_uid_under(folders[0])
    return first is not None and all(study_uid_under(folder) == first for folder in folders[1:])


def _refuse_shared_names(cases: list[tuple[str, Path]], source: Path) -> None:
    by_name: dict[str, list[str]] = {}
    for name, path in cases:  # casefold: a.nii and A.nrrd share one result file on macOS and Windows
        by_name.setdefault(name.casefold(), []).append(path.name)
    shared = [files for files in by_name.values() if len(files) > 1]
    if shared:
        listed = "; ".join(" and ".join(files) for files in shared)
        raise InputError(
            f"{source} holds cases that would share a name, so one result and one label map for both: {listed}; "
            "rename or move all but one of each"
        )


def case_name(path: Path) -> str:
    suffix = image_suffix(path) if path.is_file() else None
    return path.name[: -len(suffix)] if suffix else path.stem


def labels_for(case: str, labels: Path | None, single: bool) -> Path | None:
    """The label map of `case`: `labels` itself for a single case, else the one <labels>/<case><suffix>."""
    if labels is None or labels.is_file():
        if labels is not None and not single:
            raise InputError("--labels is a file but the input holds several cases: give a folder of label maps")
        return labels
    found = [labels / f"{case}{suffix}" for suffix in IMAGE_SUFFIXES + (".seg.nrrd",)]
    found = [path for path in found if path.is_file()]
    if len(found) > 1:
        raise InputError(
            f"several label maps for case '{case}' in {labels}: {', '.join(p.name for p in found)}; keep one"
        )
    if not found:
        raise InputError(f"no label map for case '{case}' in {labels} (expected {case}.nii.gz or similar)")
    return found[0]


def fingerprint(path: Path | None) -> dict | None:
    """What identifies an input's content cheaply: the size and modification time of its file(s)."""
    if path is None:
        return None
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}\0{stat.st_size}\0"
                      f"{stat.st_mtime_ns}\n".encode())
    return {"files": len(files), "sha256_of_sizes_and_times": digest.hexdigest()}


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a temporary file in the same folder, then os.replace."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def prepare_output_folder(output: Path) -> None:
    """Create `output`; InputError when it is a file, lies under a file or cannot be written."""
    if output.exists() and not output.is_dir():
        raise InputError(f"output {output} is a file; give a folder for the results")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create output folder {output} ({error.strerror}); choose a writable folder") from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise InputError(f"output folder {output} is not writable; choose a writable folder")


def _process_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return True  # no safe probe there (os.kill terminates): the message says how to clear it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


class OutputLock:
    """`<output>/.cacscoring-batch.lock` holding this process's PID and host while a batch writes there.

    A lock whose process has ended on this host (a killed run) is taken over; a live one is an InputError.
    """

    def __init__(self, output: Path):
        self.path = Path(output) / LOCK_NAME

    def __enter__(self) -> OutputLock:
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as error:
                raise InputError(f"cannot write in the output folder {self.path.parent} ({error.strerror}); "
                                 "choose a writable folder") from None
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                f.write(me)
            return self
        raise InputError(f"could not take the lock {self.path}; another batch is starting there")

    def _take_over_if_stale(self) -> None:
        try:
            pid_text, _, host = self.path.read_text(encoding="utf-8").strip().partition(" ")
            pid = int(pid_text)
        except FileNotFoundError:
            return  # released meanwhile
        except (ValueError, OSError):
            pid, host = None, "?"
        if pid is None or host != socket.gethostname() or _process_alive(pid):
            owner = f"PID {pid} on {host}" if pid is not None else "an unknown process"
            raise InputError(
                f"another cacscoring batch is writing to {self.path.parent} (lock {self.path}, held by {owner}); "
                "wait for it to finish, use another output folder, or delete the lock if that process is gone"
            )
        self.path.unlink(missing_ok=True)  # its process has ended: a killed run

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
