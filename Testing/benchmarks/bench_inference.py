"""Benchmark (prints figures, not a test): read CT -> segment -> score on CPU with 2 threads.

The network is the registry's default model (the shipped phantom-trained 2D UNet). Compared on a synthetic
512x512x64 thorax: the ROI-cropped pipeline at the model's 0.8 mm vs naive full-resolution slice-by-slice
inference of the same network on the whole image, PyTorch vs onnxruntime, and the peak memory (VmHWM of
a child process) for 512x512x300.
Targets (issue 3): <= 3 s end to end on 2 threads, <= 2 GB peak.
Run: .venv/bin/python Testing/benchmarks/bench_inference.py
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from CACScoringLib.inference import load_models, segment  # noqa: E402
from CACScoringLib.io import read_ct, write_image  # noqa: E402
from CACScoringLib.models import ModelPackage  # noqa: E402
from CACScoringLib.scoring import ScoringParams, score_volume  # noqa: E402
from CACScoringLib.volume import CTVolume  # noqa: E402

THREADS = 2
PIXEL_MM = 0.68  # 350 mm field of view over 512 pixels


def synthetic_thorax(nz: int, seed: int = 0) -> CTVolume:
    """Body, lungs, heart, spine and a few calcium plaques with noise (HU)."""
    rng = np.random.default_rng(seed)
    size = 512
    y, x = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    plane = np.full((size, size), -1000.0, np.float32)
    plane[((y - c) / 200) ** 2 + ((x - c) / 240) ** 2 <= 1] = 20.0
    for side in (-1, 1):
        plane[((y - c + 10) / 150) ** 2 + ((x - c - side * 125) / 80) ** 2 <= 1] = -850.0
    plane[((y - c + 20) / 70) ** 2 + ((x - c + 15) / 85) ** 2 <= 1] = 45.0  # heart
    plane[((y - c - 140) / 35) ** 2 + ((x - c) / 35) ** 2 <= 1] = 600.0  # vertebra
    hu = np.repeat(plane[None], nz, axis=0) + rng.normal(0, 15, (nz, size, size)).astype(np.float32)
    for _ in range(12):
        z, cy, cx = rng.integers(2, nz - 2), rng.integers(200, 260), rng.integers(190, 280)
        hu[z - 1 : z + 2, cy - 2 : cy + 3, cx - 2 : cx + 3] = rng.uniform(200, 900)
    return CTVolume(hu, (PIXEL_MM, PIXEL_MM, 3.0 if nz <= 64 else 0.5))


def default_package() -> ModelPackage:
    return load_models(None, torch.device("cpu"))[0]  # None: the registry default


def end_to_end(path: Path, model, **kwargs) -> tuple[float, dict, int]:
    start = time.perf_counter()
    ct = read_ct(path)
    seg = segment(ct, model, device="cpu", **kwargs)
    score_volume(ct, seg.labels, ScoringParams())
    return time.perf_counter() - start, seg.timings, int((seg.labels > 0).sum())


def best_of(runs: int, *args, **kwargs):
    return min((end_to_end(*args, **kwargs) for _ in range(runs)), key=lambda r: r[0])


def child_peak_memory(path: Path) -> None:
    """Run in a subprocess: read + segment + score the 300-slice CT, print time and peak RSS as JSON.
    Peak RSS is VmHWM, not ru_maxrss: Linux carries the forking parent's high-water mark into ru_maxrss
    across exec, which would charge this child with the benchmark's own memory."""
    torch.set_num_threads(THREADS)
    seconds, timings, _ = end_to_end(path, default_package())
    with open("/proc/self/status", encoding="ascii") as status:
        peak_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"seconds": seconds, "timings": timings, "peak_mb": peak_mb}))


def main() -> None:
    torch.set_num_threads(THREADS)
    cropped = default_package()
    n_params = sum(p.numel() for p in cropped.network.parameters())
    print(f"CPU threads: {THREADS}; torch {torch.__version__}; model {cropped.id} {cropped.version} ({n_params:,} parameters)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct64.nii"
        write_image(synthetic_thorax(64), path)
        naive = copy.copy(cropped)
        naive.config = copy.deepcopy(cropped.config)
        naive.config["preprocessing"]["inplane_spacing_mm"] = None
        end_to_end(path, cropped)  # warm-up (allocator, MONAI imports)

        fast, fast_timings, _ = best_of(2, path, cropped)
        slow, slow_timings, _ = best_of(1, path, naive, roi="whole")
        print(f"512x512x64 end to end, ROI crop + model spacing (PyTorch): {fast:6.2f} s  {_fmt(fast_timings)}")
        print(f"512x512x64 end to end, naive full-res slice by slice: {slow:6.2f} s  {_fmt(slow_timings)}")
        print(f"speed-up of the ROI pipeline: {slow / fast:.1f}x")

        end_to_end(path, cropped, backend="onnx")  # exports once; later calls reuse the session
        onnx, onnx_timings, _ = best_of(2, path, cropped, backend="onnx")
        print(f"512x512x64 end to end, ROI crop + model spacing (onnxruntime): {onnx:6.2f} s  {_fmt(onnx_timings)}")
        print(f"onnxruntime vs PyTorch segmentation: {fast_timings['segmentation_s'] / onnx_timings['segmentation_s']:.2f}x")

        big = Path(tmp) / "ct300.nii"
        write_image(synthetic_thorax(300), big)
        result = subprocess.run(
            [sys.executable, __file__, "--child", str(big)], capture_output=True, text=True, check=True
        )
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"512x512x300 end to end (PyTorch, child process): {figures['seconds']:.2f} s, "
            f"peak RSS {figures['peak_mb']:.0f} MiB  {_fmt(figures['timings'])}"
        )


def _fmt(timings: dict) -> str:
    return "(" + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in timings.items() if k != "total_s") + ")"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_peak_memory(Path(sys.argv[2]))
    else:
        main()
