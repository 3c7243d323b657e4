"""Segmentation in a background process: start, poll, cancel, without Qt.

The process runs `inference_runner.py` on a NIfTI copy of the CT and writes a labels NIfTI. Its stdout is
read by a thread into a queue, so `poll()` never blocks: the Slicer widget calls it from a QTimer, scripts
call `wait()`.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from CACScoringLib.volume import CTVolume

from .inference_runner import CANCELLED_EXIT_CODE, WARNING_PREFIX

RUNNER = Path(__file__).with_name("inference_runner.py")
PROGRESS_PREFIX = "PROGRESS "


def library_root() -> Path:
    """The folder that holds the CACScoringLib package (source tree root or the module's lib folder)."""
    import CACScoringLib

    return Path(CACScoringLib.__file__).resolve().parent.parent


def python_executable() -> str:
    """Slicer's own Python (PythonSlicer) inside the application, else this interpreter."""
    return shutil.which("PythonSlicer") if hasattr(sys.modules.get("slicer"), "app") else sys.executable


@dataclass
class JobStatus:
    state: str  # "running", "done", "failed", "cancelled"
    progress: float = 0.0  # 0..1
    message: str = ""
    log: list[str] = field(default_factory=list)  # lines since the previous poll
    warnings: list[str] = field(default_factory=list)  # the segmentation's warnings (heart ROI, input), whole run


class InferenceJob:
    """One segmentation run of a CT in a child process."""

    def __init__(self, ct: CTVolume, model: str, device: str = "auto"):
        self.workdir = Path(tempfile.mkdtemp(prefix="CACScoring-"))
        self.input_path = self.workdir / "ct.nii.gz"
        self.labels_path = self.workdir / "labels.nii.gz"
        sitk.WriteImage(ct.to_sitk(), str(self.input_path))
        self.command = [
            python_executable(), str(RUNNER),
            "--input", str(self.input_path), "--output", str(self.labels_path),
            "--model", model, "--device", device,
        ]  # fmt: skip
        self.status = JobStatus("running", message="starting")
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._cancel_requested = False
        self._last_line = ""  # a failing runner's last line says why

    def start(self) -> InferenceJob:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(library_root()), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=self.workdir
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        return self

    def _read_output(self) -> None:
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def poll(self) -> JobStatus:
        """Progress and new log lines since the last call; the final state once the process has ended."""
        self.status.log = []
        finished = False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                finished = True
                break
            if line.startswith(PROGRESS_PREFIX):
                fraction, _, message = line[len(PROGRESS_PREFIX) :].partition(" ")
                self.status.progress, self.status.message = float(fraction), message
            else:
                self.status.log.append(line)
                if line.startswith(WARNING_PREFIX):
                    self.status.warnings.append(line[len(WARNING_PREFIX) :])
                if line.strip():
                    self._last_line = line.strip()
        if finished:
            self._finish(self._process.wait())
        return self.status

    def _finish(self, returncode: int) -> None:
        if self._cancel_requested or returncode in (CANCELLED_EXIT_CODE, -signal.SIGTERM):
            self.status.state, self.status.message = "cancelled", "cancelled"
        elif returncode == 0 and self.labels_path.is_file():
            self.status.state, self.status.progress, self.status.message = "done", 1.0, "done"
        else:
            self.status.state = "failed"
            self.status.message = self._last_line or f"segmentation process exited with code {returncode}"

    def cancel(self, grace_s: float = 5.0) -> None:
        """Ask the process to stop (it stops between steps), kill it if it does not within `grace_s`."""
        if self._process is None or self._process.poll() is not None:
            return
        self._cancel_requested = True
        self._process.terminate()
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._process.kill()

    def wait(self, timeout_s: float | None = None, progress=None) -> JobStatus:
        """Block until the process ends (scripts, batch mode); `progress(status)` after each poll."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._process.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"segmentation did not finish within {timeout_s:g} s")
            time.sleep(0.2)
            status = self.poll()
            if progress is not None:
                progress(status)
        self._reader.join()  # all output is queued once the reader has seen end of file
        status = self.poll()
        if progress is not None:
            progress(status)
        return status

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
