"""Benchmark (prints figures, not a test): read_ct of a 64-slice 512x512 DICOM series from write_dicom_series.

Compares the reader (default threads) with SimpleITK's (GDCM's) series reader (serial vs threaded reading is
compared in bench_dicom_read.py), and the cost of checking a .nii.gz whole (its gzip stream decompressed once
more) against SimpleITK's own read.
Files are in the page cache after the first read, so the figures are decode/parse costs, not disk.
Run: .venv/bin/python Testing/benchmarks/bench_io.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CACScoringLib.io import images, list_series, read_ct, write_dicom_series, write_image
from CACScoringLib.io.dicom import default_workers
from CACScoringLib.volume import CTVolume

REPEATS = 5


def timed(function, repeats=REPEATS) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def main() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 1500, size=(64, 512, 512)).astype(np.float32)
    ct = CTVolume(array, spacing=(0.4, 0.4, 3.0), origin=(-100.0, -120.0, -50.0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        write_dicom_series(ct, folder)
        print(f"write_dicom_series 64x512x512: {time.perf_counter() - start:.3f} s")

        seconds, back = timed(lambda: read_ct(folder))
        assert np.array_equal(back.array, array)
        print(f"read_ct ({default_workers()} threads): {seconds * 1000:.0f} ms median of {REPEATS}")

        seconds, summaries = timed(lambda: list_series(folder))
        print(f"list_series (headers only): {seconds * 1000:.0f} ms, {summaries[0].n_slices} slices")

        seconds, image = timed(lambda: sitk_read(folder))
        assert np.array_equal(sitk.GetArrayFromImage(image), array)
        print(f"SimpleITK ImageSeriesReader (reference): {seconds * 1000:.0f} ms median of {REPEATS}")

        nifti = write_image(ct, folder / "ct.nii.gz")
        seconds, _ = timed(lambda: images._check_nifti_complete(nifti, "image"))
        print(f".nii.gz whole-file check ({nifti.stat().st_size / 1e6:.0f} MB): {seconds * 1000:.0f} ms median")
        seconds, _ = timed(lambda: sitk.ReadImage(str(nifti)))
        print(f"SimpleITK ReadImage of it: {seconds * 1000:.0f} ms median of {REPEATS}")


if __name__ == "__main__":
    main()
