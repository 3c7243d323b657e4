"""Stand-ins for a segmentation job's processes: `PythonSlicer` (a launcher that starts the real Python as its
child and passes no signal on, like the CTK launcher) and inference_runner.py (labels calcium >= 130 HU as LAD
after waiting its --model argument in seconds; its --device argument picks a misbehaviour)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

LAUNCHER = f"""#!{sys.executable}
import subprocess, sys
sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))  # like the CTK launcher: a child, no signal handling
"""

RUNNER = """
import os, signal, sys, time
from pathlib import Path

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
output = Path(args["--output"])
if args["--device"] == "ignore-sigterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
output.with_name("runner.pid").write_text(str(os.getpid()))
if args["--device"] == "undecodable":
    sys.stdout.buffer.write(b"\\xff\\xfe not UTF-8\\n")
    sys.stdout.flush()
print("PROGRESS 0.5 segmenting", flush=True)
time.sleep(float(args["--model"]))
import SimpleITK as sitk
ct = sitk.ReadImage(args["--input"])
labels = sitk.Cast(sitk.BinaryThreshold(ct, 130.0, 1e6, 2, 0), sitk.sitkUInt8)  # calcium -> LAD
sitk.WriteImage(labels, str(output))
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
