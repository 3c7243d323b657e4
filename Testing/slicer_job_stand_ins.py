"""Stand-ins for a segmentation job's processes: `PythonSlicer` (a launcher that starts the real Python as its
child and passes no signal on, like the CTK launcher) and `inference_runner.py --serve` (for each request,
labels calcium >= 130 HU as LAD after waiting its "model" in seconds unless SIGTERM stops the job; its "device"
picks a misbehaviour)."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

LAUNCHER = f"""#!{sys.executable}
import subprocess, sys
sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))  # like the CTK launcher: a child, no signal handling
"""

RUNNER = """
import json, os, signal, sys, threading
from pathlib import Path

print(f"worker pid: {os.getpid()}", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
for line in sys.stdin:
    args = json.loads(line)
    output = Path(args["output"])
    stop.clear()
    print("job started", flush=True)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if args["device"] == "ignore-sigterm" else lambda *_: stop.set())
    output.with_name("runner.pid").write_text(str(os.getpid()))
    if args["device"] == "undecodable":
        sys.stdout.buffer.write(b"\\xff\\xfe not UTF-8\\n")
        sys.stdout.flush()
    print("PROGRESS 0.5 segmenting", flush=True)
    if stop.wait(float(args["model"])):
        print("job end: 3", flush=True)
        continue
    import SimpleITK as sitk
    ct = sitk.ReadImage(args["input"])
    labels = sitk.Cast(sitk.BinaryThreshold(ct, 130.0, 1e6, 2, 0), sitk.sitkUInt8)  # calcium -> LAD
    sitk.WriteImage(labels, str(output))
    print("job end: 0", flush=True)
"""


def install(tmp_path: Path, monkeypatch) -> Path:
    """Both stand-ins in place of PythonSlicer and inference_runner.py; returns the launcher's path."""
    from CACScoringSlicerLib import inference_job

    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    launcher.chmod(0o755)
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(RUNNER), encoding="utf-8")
    monkeypatch.setattr(inference_job, "RUNNER", runner)
    monkeypatch.setattr(inference_job, "python_executable", lambda: str(launcher))
    return launcher


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has ended; only its exit status is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def ended(pid: int, timeout_s: float = 2.0) -> bool:
    """A killed process closes its files before it is gone: give it a moment."""
    deadline = time.monotonic() + timeout_s
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not running(pid)


def runner_pid(job, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    path = job.workdir / "runner.pid"
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError("the runner stand-in never started")
