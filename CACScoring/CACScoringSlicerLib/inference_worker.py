"""One background segmentation process per Slicer session, with its models kept loaded.

`inference_runner.py --serve` runs in its own process group (see process_tree), started on the first job and
again after it has died (a crash, a cancel that had to kill it, a different runner command); a reader thread
queues its output lines. One job at a time holds it (see InferenceJob). `shutdown()` (Slicer's exit, the
module's cleanup) closes its stdin, which ends it, and kills the tree if it has not ended within a moment.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading

from . import process_tree
from .inference_runner import WORKER_PID_PREFIX

SHUTDOWN_GRACE_S = 2.0


class WorkerEnded:
    """Queued after the last line: the process tree has ended (or its output broke: `error`)."""

    def __init__(self, error: str = ""):
        self.error = error


class InferenceWorker:
    def __init__(self):
        self._busy = threading.Lock()  # held by the one job using the process
        self._state = threading.Lock()  # guards the fields below between job threads and callers
        self.process: subprocess.Popen | None = None
        self.lines: queue.Queue[str | WorkerEnded] = queue.Queue()
        self._command: list[str] | None = None
        self._reader: threading.Thread | None = None
        self.runner_pid: int | None = None
        self._owner = None  # the job holding the process: a late cancel of an earlier job never reaches the next

    def acquire(self, owner, cancelled) -> bool:
        """Wait for the process to be free and hold it for `owner`; False (not acquired) once `cancelled()`."""
        while not self._busy.acquire(timeout=0.1):
            if cancelled():
                return False
        with self._state:
            self._owner = owner
        return True

    def release(self) -> None:
        with self._state:
            self._owner = None
        self._busy.release()

    def alive(self) -> bool:
        return self.process is not None and self._reader.is_alive() and self.process.poll() is None

    def submit(self, command: list[str], env: dict, request: dict) -> tuple[subprocess.Popen, queue.Queue]:
        """Send one request, starting the process first if none runs for `command`; returns the process and
        the queue of its output lines (a WorkerEnded last)."""
        with self._state:
            if self.process is not None and (command != self._command or not self.alive()):
                self._end(SHUTDOWN_GRACE_S)
            if self.process is None:
                self._start(command, env)
            try:
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
            except OSError:  # it died after the check: the job's line queue shows it ended
                pass
            return self.process, self.lines

    def _start(self, command: list[str], env: dict) -> None:
        self.process = process_tree.start(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, encoding="utf-8", env=env, cwd=tempfile.gettempdir(),
        )  # fmt: skip
        self._command, self.runner_pid = command, None
        self.lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.process, self.lines), daemon=True,
                                        name="CACScoring inference worker output")
        self._reader.start()

    def _read(self, process: subprocess.Popen, lines: queue.Queue) -> None:
        error = ""
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                if line.startswith(WORKER_PID_PREFIX):
                    self.runner_pid = int(line[len(WORKER_PID_PREFIX) :])
                else:
                    lines.put(line)
        except Exception as broken:  # e.g. undecodable output: nothing of it keeps running
            error = f"{type(broken).__name__}: {broken}"
            process_tree.kill(process)
        finally:
            lines.put(WorkerEnded(error))

    def stop_job(self, owner) -> None:
        """Ask `owner`'s running job to stop between steps: SIGTERM to the runner only (the process stays)."""
        with self._state:
            if self._owner is not owner or not self.alive():
                return
            if os.name == "nt" or self.runner_pid is None:
                process_tree.terminate(self.process)
                return
            try:
                os.kill(self.runner_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self, owner) -> None:
        """Kill the whole tree now (`owner`'s job did not stop in time); the next job starts a new process."""
        with self._state:
            if self._owner is owner and self.process is not None and self._reader.is_alive():
                process_tree.kill(self.process)

    def shutdown(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """End the process tree: EOF on its stdin, a kill after `grace_s` if it has not ended."""
        with self._state:
            if self.process is not None:
                self._end(grace_s)

    def _end(self, grace_s: float) -> None:
        process, self.process = self.process, None
        try:
            process.stdin.close()  # EOF: the runner returns, the launcher after it
        except OSError:
            pass  # the pipe is already broken: the process is gone
        # The reader ends when every process holding the output pipe has exited; while one does, the group
        # exists, so its id is still this tree's.
        self._reader.join(grace_s)
        if self._reader.is_alive():
            process_tree.kill(process)
            self._reader.join()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


WORKER = InferenceWorker()


def shutdown() -> None:
    """End this Slicer session's segmentation process, if one runs."""
    WORKER.shutdown()
