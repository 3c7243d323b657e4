"""Segmentation in a background process: start, poll, cancel, without Qt.

A job thread writes the CT as an uncompressed NIfTI (so the GUI thread never waits for it), hands the request
to the session's segmentation process (inference_worker: `inference_runner.py --serve` in its own process
group, models kept loaded, started on first use) and queues the job's output lines, so `poll()` never blocks:
the Slicer widget calls it from a QTimer, scripts call `wait()`. A job remembers the nodes it was started on;
the logic writes its labels there, whatever is selected when it ends.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from CACScoringLib.errors import InputError
from CACScoringLib.volume import CTVolume

from .inference_runner import (
    BLOOD_POOL_PREFIX,
    CANCELLED_EXIT_CODE,
    JOB_END_PREFIX,
    JOB_STARTED,
    WARNING_PREFIX,
)
from .inference_worker import WORKER, WorkerEnded

RUNNER = Path(__file__).with_name("inference_runner.py")
PROGRESS_PREFIX = "PROGRESS "
STOP_GRACE_S = 5.0  # the runner stops between steps; what is still running after this is killed


def library_root() -> Path:
    """The folder that holds the CACScoringLib package (source tree root or the module's lib folder)."""
    import CACScoringLib

    return Path(CACScoringLib.__file__).resolve().parent.parent


def python_executable() -> str:
    """Slicer's own Python (the PythonSlicer launcher) inside the application, else this interpreter."""
    if not hasattr(sys.modules.get("slicer"), "app"):
        return sys.executable
    launcher = shutil.which("PythonSlicer")
    if launcher is None:
        raise InputError("PythonSlicer, Slicer's Python launcher, is not on the PATH: start Slicer from its own "
                         "launcher (Slicer or Slicer.exe) or reinstall Slicer")
    return launcher


@dataclass
class JobStatus:
    state: str  # "running", "done", "failed", "cancelled"
    progress: float = 0.0  # 0..1
    message: str = ""
    log: list[str] = field(default_factory=list)  # lines since the previous poll
    warnings: list[str] = field(default_factory=list)  # the segmentation's warnings (heart ROI, input), whole run
    blood_pool_hu: float | None = None  # measured in the heart region the run found; None: no heart found


class InferenceJob:
    """One segmentation run of a CT by the session's segmentation process (see inference_worker).

    `volume_id`, `segmentation_id` and `options` are what the caller bound the job to (see
    CACScoringSceneLogic.start_inference); the job itself only carries them.
    """

    def __init__(self, ct: CTVolume, model: str, device: str = "auto", python: str | None = None):
        self.workdir = Path(tempfile.mkdtemp(prefix="CACScoring-"))
        self.input_path = self.workdir / "ct.nii"  # uncompressed: the fastest write
        self.labels_path = self.workdir / "labels.nii"
        self.command = [python or python_executable(), str(RUNNER), "--serve"]
        self.request = {"input": str(self.input_path), "output": str(self.labels_path), "model": model,
                        "device": device}
        self.volume_id = self.segmentation_id = self.options = None
        self.status = JobStatus("running", message="writing the CT")
        self._ct = ct
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()  # guards _process, _started, _cancel_requested between the thread and callers
        self._process = None  # the worker's process, once the request is sent
        self._thread: threading.Thread | None = None
        self._cancel_requested = False
        self._started = False  # the worker read the request: a SIGTERM now stops this job
        self._worker_ended: WorkerEnded | None = None  # the worker's process ended during the job
        self._error = ""  # what broke the job thread
        self._returncode: int | None = None
        self._last_line = ""  # a failing runner's last line says why
        self._kill_after: float | None = None  # monotonic time: a cancel without waiting kills the tree then

    def start(self) -> InferenceJob:
        self._thread = threading.Thread(target=self._run, name="CACScoring inference", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        """Job thread: write the CT, hand the request to the worker, queue its lines; None marks the end."""
        try:
            sitk.WriteImage(self._ct.to_sitk(), str(self.input_path), False)
            self._ct = None
            if not WORKER.acquire(self, lambda: self._cancel_requested):
                return  # cancelled while an earlier job held the worker
            try:
                self._serve()
            finally:
                WORKER.release()
        except Exception as error:  # e.g. a full disk: the job fails
            self._error = f"{type(error).__name__}: {error}"
        finally:
            self._lines.put(None)

    def _serve(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(library_root()), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"], env["PYTHONIOENCODING"] = "1", "utf-8"
        with self._lock:
            if self._cancel_requested:
                return
            self._process, lines = WORKER.submit(self.command, env, self.request)
        while True:
            line = lines.get()
            if isinstance(line, WorkerEnded):
                self._worker_ended = line
                try:
                    self._returncode = self._process.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
                return
            if line == JOB_STARTED:
                with self._lock:
                    self._started = True
                    if self._cancel_requested:
                        WORKER.stop_job(self)
            elif line.startswith(JOB_END_PREFIX):
                self._returncode = int(line[len(JOB_END_PREFIX) :])
                return
            else:
                self._lines.put(line)

    def poll(self) -> JobStatus:
        """Progress and new log lines since the last call; the final state once the job has ended."""
        if self._kill_after is not None and time.monotonic() > self._kill_after:
            self._kill_after = None
            self._kill_if_running()
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
                elif line.startswith(BLOOD_POOL_PREFIX):
                    self.status.blood_pool_hu = float(line[len(BLOOD_POOL_PREFIX) :])
                if line.strip():
                    self._last_line = line.strip()
        if finished:
            self._finish()
        return self.status

    def _finish(self) -> None:
        error = self._error or (self._worker_ended.error if self._worker_ended else "")
        if self._cancel_requested or self._returncode == CANCELLED_EXIT_CODE:
            self.status.state, self.status.message = "cancelled", "cancelled"
        elif error:
            self.status.state, self.status.message = "failed", f"the segmentation job broke ({error})"
        elif self._worker_ended is not None:
            self.status.state = "failed"
            self.status.message = (f"the segmentation process ended unexpectedly (exit code {self._returncode})"
                                   + (f" after: {self._last_line}" if self._last_line else "")
                                   + "; Apply again starts a new one")
        elif self._returncode == 0 and self.labels_path.is_file():
            self.status.state, self.status.progress, self.status.message = "done", 1.0, "done"
        else:
            self.status.state = "failed"
            self.status.message = self._last_line or f"segmentation process exited with code {self._returncode}"

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def cancel(self, grace_s: float | None = None, wait: bool = True) -> None:
        """Stop the job: ask the process to stop it, kill the process tree if it has not after `grace_s`
        (STOP_GRACE_S); the next job then starts a new process.

        With `wait`, returns once nothing of the job runs any more (if the CT is still being written, once it
        is written: the request is then never sent). Without, returns at once: `poll()` kills the tree once the
        grace time is over and reports "cancelled" when the job has ended (the panel's Cancel).
        """
        grace_s = STOP_GRACE_S if grace_s is None else grace_s
        with self._lock:
            self._cancel_requested = True
            if self._started and self._thread is not None and self._thread.is_alive():
                WORKER.stop_job(self)  # before `job started`, the job thread passes the request on
        if self._thread is None or not self._thread.is_alive():
            return
        if not wait:
            self._kill_after = time.monotonic() + grace_s
            return
        self._thread.join(grace_s)  # ends at the job's end line, or when the process tree has ended
        self._kill_if_running()
        self._thread.join()

    def _kill_if_running(self) -> None:
        with self._lock:
            submitted = self._process is not None  # else the CT is still being written, and nothing starts
        if submitted and self._thread.is_alive():
            WORKER.kill(self)

    def wait(self, timeout_s: float | None = None, progress=None) -> JobStatus:
        """Block until the job ends (scripts, batch mode); `progress(status)` after each poll."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.poll()
            if progress is not None:
                progress(status)
            if status.state != "running":
                return status
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"segmentation did not finish within {timeout_s:g} s")
            time.sleep(0.2)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def close(self) -> None:
        """Cancel if still running, and remove the temporary folder (scene close, module cleanup)."""
        self.cancel()
        self.cleanup()
