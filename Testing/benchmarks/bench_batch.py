"""Benchmark (prints figures, not a test): cohort throughput of `cacscoring batch` with the default model, in
cases per hour, as whole processes (start-up, model load once per rank, reading prefetched, results written).

Side by side in one run on the same phantom cases (512 x 512 x 64 thorax CTs as NIfTI): one process, and
torchrun with R ranks (each its own GPU on a GPU machine; on CPU each rank gets threads / R threads).
Issue 18 asks for cases per hour per GPU: on a GPU machine run `--device cuda --ranks 1` for one GPU.
Run: .venv/bin/python Testing/benchmarks/bench_batch.py [--cases 8] [--ranks 2] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from CACScoringLib.io import write_image
from CACScoringLib.phantom import make_thorax_phantom

PIXEL_MM = 0.68


def write_cases(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for seed in range(count):
        phantom = make_thorax_phantom(seed=1000 + seed, shape=(64, 512, 512), spacing=(PIXEL_MM, PIXEL_MM, 3.0),
                                      compute_scores=False)
        write_image(phantom.ct, folder / f"case{seed:03d}.nii.gz")


def timed_batch(launcher: list[str], cases: Path, output: Path, device: str, threads: int) -> tuple[float, list[float]]:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run([*launcher, "batch", str(cases), str(output), "--device", device], env=environment,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"batch failed ({done.returncode}): {done.stderr[-2000:]}")
    with (output / "summary.csv").open(encoding="utf-8") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    return wall, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        cases = Path(work) / "cases"
        write_cases(cases, args.cases)
        runs = {
            "1 process": ([sys.executable, "-m", "CACScoringLib"], args.threads),
            f"torchrun, {args.ranks} ranks": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                               f"--nproc-per-node={args.ranks}", "-m", "CACScoringLib"],
                                              max(1, args.threads // args.ranks)),
        }
        print(f"{args.cases} cases of 512 x 512 x 64, device {args.device}, {args.threads} CPU threads in all")
        for name, (launcher, threads) in runs.items():
            wall, seconds = timed_batch(launcher, cases, Path(work) / name.replace(" ", "_"), args.device, threads)
            print(f"{name:20s} wall {wall:6.1f} s  -> {3600 * args.cases / wall:7.0f} cases/hour; "
                  f"per case median {statistics.median(seconds):.2f} s in its rank")


if __name__ == "__main__":
    main()
