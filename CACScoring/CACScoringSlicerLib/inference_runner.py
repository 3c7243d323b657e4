"""Child process of InferenceJob: segment CT NIfTIs into labels NIfTIs with CACScoringLib.

One-shot (`--input ... --output ...`): one CT, then exit. Serve (`--serve`, what the Slicer module runs, see
inference_worker): first a `worker pid: <pid>` line, then one JSON request per stdin line ({"input", "output",
"model", "device"}), answered by `job started`, the job's lines and `job end: <exit code>`; models stay loaded
between requests; EOF on stdin ends the process.

A job prints `PROGRESS <fraction> <message>`, `warning: <text>` and `blood pool HU: <value>` lines for the
parent; SIGTERM asks it to stop between steps (exit code 3; in serve mode only the running job stops); a
user-fixable problem exits 2 with the message as the line before.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

CANCELLED_EXIT_CODE = 3
INPUT_ERROR_EXIT_CODE = 2
WARNING_PREFIX = "warning: "
BLOOD_POOL_PREFIX = "blood pool HU: "  # what the heart region measured: the parent's contrast check reuses it
WORKER_PID_PREFIX = "worker pid: "  # serve mode: the process to signal (the launcher passes no signal on)
JOB_STARTED = "job started"  # serve mode: the request was read; a SIGTERM from now on is for this job
JOB_END_PREFIX = "job end: "  # serve mode: the job's exit code
MODEL_LOADED_PREFIX = "model loaded: "  # serve mode: printed once per (model, device) kept loaded
MAX_LOADED_MODELS = 2  # serve mode: a reader switching between two models loads neither again


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help="answer JSON requests on stdin until EOF")
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--model", default="", help="registry id or model package folder; empty: registry default")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if not args.serve and not (args.input and args.output):
        parser.error("give --input and --output, or --serve")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.serve:
        return serve(stop)
    return run_job(args.input, args.output, lambda: args.model or None, args.device, stop)


def run_job(input_path: str, output_path: str, model: Callable[[], object], device: str,
            stop: threading.Event) -> int:
    """Segment one CT; `model()` gives what segment() takes (an id, a folder, loaded packages or None)."""

    def progress(fraction: float, message: str = "") -> None:
        print(f"PROGRESS {float(fraction):.4f} {message}", flush=True)

    import SimpleITK as sitk

    from CACScoringLib.errors import InputError
    from CACScoringLib.inference import Cancelled, segment
    from CACScoringLib.volume import CTVolume

    try:
        ct = CTVolume.from_sitk(sitk.ReadImage(input_path))
        result = segment(ct, model=model(), device=device, progress=progress, cancel=stop)
    except Cancelled:
        return CANCELLED_EXIT_CODE
    except InputError as error:
        print(error, flush=True)
        return INPUT_ERROR_EXIT_CODE
    for warning in result.warnings:
        print(f"{WARNING_PREFIX}{warning}", flush=True)
    if result.roi.heart is not None and result.roi.heart.blood_pool_hu is not None:
        print(f"{BLOOD_POOL_PREFIX}{result.roi.heart.blood_pool_hu!r}", flush=True)
    sitk.WriteImage(ct.to_sitk(result.labels), output_path)
    return 0


def serve(stop: threading.Event) -> int:
    print(f"{WORKER_PID_PREFIX}{os.getpid()}", flush=True)
    loaded: dict[tuple, list] = {}  # most recently used last

    def packages(model: str, device: str) -> list:
        key = (model, device, _folder_stamp(model))  # a package folder rewritten since is loaded again
        if key in loaded:
            loaded[key] = loaded.pop(key)
        else:
            from CACScoringLib.inference.pipeline import load_models
            from CACScoringLib.models.package import resolve_device

            for stale in [k for k in loaded if k[:2] == key[:2]]:
                del loaded[stale]
            while len(loaded) >= MAX_LOADED_MODELS:
                del loaded[next(iter(loaded))]  # the least recently used
            loaded[key] = load_models(model or None, resolve_device(device))
            print(f"{MODEL_LOADED_PREFIX}{model or 'registry default'} on {device}", flush=True)
        return loaded[key]

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        stop.clear()  # a SIGTERM for an earlier job does not stop this one
        print(JOB_STARTED, flush=True)
        model, device = request.get("model", ""), request.get("device", "auto")
        try:
            code = run_job(request["input"], request["output"], functools.partial(packages, model, device), device,
                           stop)
        except Exception:  # a bug or a broken file fails this job; the process stays for the next
            traceback.print_exc(file=sys.stdout)
            code = 1
        print(f"{JOB_END_PREFIX}{code}", flush=True)
    return 0


def _folder_stamp(model: str) -> str:
    """A package folder's files by size and time (batch's fingerprint); "" for a registry id (its cache is fixed)."""
    from CACScoringLib.batch import fingerprint

    if not model or not Path(model).is_dir():
        return ""
    return fingerprint(Path(model))["sha256_of_sizes_and_times"]


if __name__ == "__main__":
    sys.exit(main())
