"""Benchmark (prints figures, not a test): wall time of a Slicer segmentation job on a fresh session process
(start, imports, model load) against the next job on another CT (process and model kept), with the registry's
default model on CPU, plus the one-shot runner that every Apply started before.

Run: .venv/bin/python Testing/benchmarks/bench_slicer_worker.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "CACScoring"))

from CACScoringSlicerLib import inference_runner, inference_worker  # noqa: E402
from CACScoringSlicerLib.inference_job import InferenceJob, library_root  # noqa: E402

from CACScoringLib.phantom import make_thorax_phantom  # noqa: E402

SHAPE = (32, 256, 256)


def timed_job(ct) -> float:
    start = time.perf_counter()
    job = InferenceJob(ct, model="", device="cpu", python=sys.executable).start()
    status = job.wait(timeout_s=600)
    assert status.state == "done", status.message
    job.cleanup()
    return time.perf_counter() - start


def main() -> None:
    cts = [make_thorax_phantom(seed=seed, shape=SHAPE, spacing=(0.8, 0.8, 3.0), compute_scores=False).ct
           for seed in (1, 2, 3)]
    folder = Path(tempfile.mkdtemp())
    sitk.WriteImage(cts[0].to_sitk(), str(folder / "ct.nii"))
    start = time.perf_counter()
    subprocess.run([sys.executable, inference_runner.__file__, "--input", str(folder / "ct.nii"), "--output",
                    str(folder / "labels.nii"), "--device", "cpu"], check=True, capture_output=True,
                   env={"PYTHONPATH": str(library_root()), "OMP_NUM_THREADS": "1"})
    one_shot_s = time.perf_counter() - start

    inference_worker.shutdown()
    first_s, second_s, third_s = (timed_job(ct) for ct in cts)
    inference_worker.shutdown()
    print(f"CT {'x'.join(map(str, SHAPE))}, default model, CPU")
    print(f"before: one-shot runner process per Apply: {one_shot_s:.2f} s")
    print(f"now: first job (process start, imports, model load): {first_s:.2f} s")
    print(f"now: second job, another CT, same process:           {second_s:.2f} s")
    print(f"now: third job, another CT, same process:            {third_s:.2f} s")


if __name__ == "__main__":
    main()
