"""Benchmark (prints figures, not a test): serial vs threaded DICOM series reading, side by side in one run.

Series of 64 and 300 slices of 512x512 are written with the project's writer (uncompressed, as
write_dicom_series stores them) into a temporary folder, plus 64 slices recompressed as JPEG Lossless (as
many PACS exports are; GDCM inside SimpleITK decodes those). read_ct(workers=1) is the serial reader; the
threaded reads use 2, 4 and the default number of threads (one per CPU, at most 8). Each volume is
checked equal bit for bit to the serial one. Runs alternate serial and threaded so that load and
CPU-frequency drift hit both alike. "warm": the files are in the page cache, so the figures are parse and
decode costs; "cold": before each read the series' files are evicted from the page cache (fsync, then
posix_fadvise DONTNEED on those files only), so the reads wait on the disk as a batch over a cohort does.

Run: OMP_NUM_THREADS=1 .venv/bin/python Testing/benchmarks/bench_dicom_read.py [--repeats 5] [--no-300] [--no-jpeg]
[--no-cold]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from CACScoringLib.io import read_ct, write_dicom_series
from CACScoringLib.io.dicom import default_workers
from CACScoringLib.volume import CTVolume

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Testing/, for the shared io helpers
from io_helpers import jpeg_lossless_copy  # noqa: E402


def write_series(folder: Path, slices: int) -> None:
    array = np.random.default_rng(slices).integers(-1024, 1500, size=(slices, 512, 512)).astype(np.float32)
    write_dicom_series(CTVolume(array, spacing=(0.4, 0.4, 3.0), origin=(-100.0, -120.0, -50.0)), folder)


def evict_from_page_cache(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages cannot be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def compare(name: str, folder: Path, thread_counts: list[int], repeats: int, cold: bool) -> None:
    serial = read_ct(folder, workers=1)  # the reference volume
    times: dict[int, list[float]] = {n: [] for n in [1, *thread_counts]}
    for _ in range(repeats):
        for workers in times:
            if cold:
                evict_from_page_cache(folder)
            start = time.perf_counter()
            volume = read_ct(folder, workers=workers)
            times[workers].append(time.perf_counter() - start)
            if volume.array.tobytes() != serial.array.tobytes() or volume.origin != serial.origin:
                raise SystemExit(f"{name}: {workers} threads read a different volume than the serial reader")
    base = statistics.median(times[1])
    cells = [f"serial {base * 1000:7.0f} ms"]
    cells += [f"{n} threads {statistics.median(times[n]) * 1000:6.0f} ms ({base / statistics.median(times[n]):.2f}x)"
              for n in thread_counts]
    print(f"{name + (' cold' if cold else ' warm'):39s} " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="reads per thread count (median printed)")
    parser.add_argument("--no-300", action="store_true", help="skip the 300-slice series")
    parser.add_argument("--no-jpeg", action="store_true", help="skip the JPEG Lossless series")
    parser.add_argument("--no-cold", action="store_true", help="skip the reads with the files out of the page cache")
    args = parser.parse_args()
    thread_counts = sorted({2, 4, default_workers()} - {1})
    print(f"os.cpu_count() {os.cpu_count()}; default threads {default_workers()}; median of {args.repeats} reads; "
          "every threaded volume equals the serial one bit for bit")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for slices in (64,) if args.no_300 else (64, 300):
            folder = root / f"s{slices}"
            start = time.perf_counter()
            write_series(folder, slices)
            print(f"(wrote {slices} x 512 x 512 in {time.perf_counter() - start:.1f} s)")
            series = [(f"{slices} x 512 x 512 uncompressed", folder)]
            if slices == 64 and not args.no_jpeg:
                jpeg_lossless_copy(folder, root / "jpeg64")
                series.append(("64 x 512 x 512 JPEG Lossless", root / "jpeg64"))
            for name, path in series:
                for cold in (False,) if args.no_cold else (False, True):
                    compare(name, path, thread_counts, args.repeats, cold)


if __name__ == "__main__":
    main()
