"""Benchmark (prints figures, not a test): read CT -> segment -> score, per stage, on CPU or CUDA.

The network is the registry's default model (the shipped phantom-trained 2D UNet). On the phantom
generator's 512x512x64 thorax (seed 1, 0.68 mm pixels), side by side in one run: the ROI-cropped pipeline at
the model's 0.8 mm vs naive full-resolution slice-by-slice inference of the same network on the whole image,
each as read, model load, ROI, network, post-processing and score seconds, and the total Agatston score
against the phantom's truth. Options: --onnx adds onnxruntime; --large adds 512x512x300 in a child
process with its peak memory (VmHWM; and peak GPU memory on CUDA).
Targets (issues 3, 18): <= 3 s end to end on 2 CPU threads, <= 2 GB peak.
Run: .venv/bin/python Testing/benchmarks/bench_inference.py [--device auto|cpu|cuda] [--threads 2]
  (about a minute on 2 idle CPU cores; OMP_NUM_THREADS defaults to 2 as well; on a GPU machine run
  OMP_NUM_THREADS=16 ... --device cuda --threads 16 --large --onnx as it is)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from CACScoringLib.errors import InputError  # noqa: E402
from CACScoringLib.inference import load_models, segment  # noqa: E402
from CACScoringLib.io import read_ct, write_image  # noqa: E402
from CACScoringLib.models import ModelPackage, resolve_device  # noqa: E402
from CACScoringLib.phantom import make_thorax_phantom  # noqa: E402
from CACScoringLib.scoring import ScoringParams, score_volume  # noqa: E402

PIXEL_MM = 0.68  # 350 mm field of view over 512 pixels
STAGES = (("read_s", "read"), ("load_s", "model load"), ("roi_s", "ROI"), ("segmentation_s", "network"),
          ("postprocess_s", "post-processing"), ("score_s", "score"), ("total_s", "total"))


def thorax(nz: int, seed: int = 1):
    """The phantom generator's thorax on a 512 x 512 clinical grid (3 mm slices; 0.5 mm beyond 64 slices)."""
    return make_thorax_phantom(seed=seed, shape=(nz, 512, 512), spacing=(PIXEL_MM, PIXEL_MM, 3.0 if nz <= 64 else 0.5))


def default_package(device: torch.device) -> ModelPackage:
    return load_models(None, device)[0]  # None: the registry default


def naive_variant(package: ModelPackage) -> ModelPackage:
    """The same network run at the CT's own resolution (no resampling to the model's spacing)."""
    naive = copy.copy(package)
    naive.config = copy.deepcopy(package.config)
    naive.config["preprocessing"]["inplane_spacing_mm"] = None
    return naive


def end_to_end(path: Path, model, device: torch.device, **kwargs) -> tuple[dict, float]:
    """Seconds per stage (read, the Segmentation's timings, score) and the total Agatston score."""
    start = time.perf_counter()
    ct = read_ct(path)
    timings = {"read_s": time.perf_counter() - start}
    seg = segment(ct, model, device=device, **kwargs)
    timings.update((key, value) for key, value in seg.timings.items() if key != "total_s")
    tick = time.perf_counter()
    agatston = score_volume(ct, seg.labels, ScoringParams()).total.agatston
    timings["score_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - start
    return timings, agatston


def best_of(runs: int, *args, **kwargs) -> tuple[dict, float]:
    return min((end_to_end(*args, **kwargs) for _ in range(runs)), key=lambda result: result[0]["total_s"])


def print_side_by_side(columns: dict[str, tuple[dict, float]], truth_agatston: float) -> None:
    names = list(columns)
    print(f"{'stage (s)':18s}" + "".join(f"{name:>26s}" for name in names))
    for key, stage in STAGES:
        print(f"{stage:18s}" + "".join(f"{columns[name][0].get(key, float('nan')):26.3f}" for name in names))
    print(f"{'total Agatston':18s}" + "".join(f"{columns[name][1]:26.1f}" for name in names)
          + f"   (phantom truth {truth_agatston:.1f})")


def child_peak_memory(path: Path, device: torch.device) -> None:
    """Run in a subprocess: read + segment + score the 300-slice CT, print stages and peak memory as JSON.
    Peak RSS is VmHWM, not ru_maxrss: Linux carries the forking parent's high-water mark into ru_maxrss
    across exec, which would charge this child with the benchmark's own memory."""
    timings, agatston = end_to_end(path, default_package(device), device)
    with open("/proc/self/status", encoding="ascii") as status:
        peak_mb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps({"timings": timings, "agatston": agatston, "peak_mb": peak_mb, "gpu_peak_mb": gpu_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when available (default)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default 2)")
    parser.add_argument("--slices", type=int, default=64, help="slices of the 512 x 512 phantom CT (default 64)")
    parser.add_argument("--runs", type=int, default=1, help="best of N for the ROI pipeline (default 1)")
    parser.add_argument("--onnx", action="store_true", help="add an onnxruntime (CPU) column")
    parser.add_argument("--large", action="store_true",
                        help="also 512 x 512 x 300 in a child process, with its peak memory")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except InputError as error:
        parser.error(str(error))
    start = time.perf_counter()
    package = default_package(device)
    load_seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in package.network.parameters())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} torch threads"
    print(f"device {device} ({where}); torch {torch.__version__}; "
          f"model {package.id} {package.version} ({n_params:,} parameters, loaded in {load_seconds:.2f} s; "
          "the runs below reuse it)")
    with tempfile.TemporaryDirectory() as tmp:
        path, warm_up = Path(tmp) / "ct.nii", Path(tmp) / "warm_up.nii"
        phantom = thorax(args.slices)
        write_image(phantom.ct, path)
        write_image(thorax(8).ct, warm_up)
        end_to_end(warm_up, package, device)  # lazy imports, allocator, CUDA kernels
        truth = phantom.truth()["scores"]["total"]["agatston"]
        columns = {"ROI crop + model spacing": best_of(args.runs, path, package, device)}
        columns["naive full-res"] = best_of(1, path, naive_variant(package), device, roi="whole")
        if args.onnx:
            cpu = torch.device("cpu")
            end_to_end(warm_up, package, cpu, backend="onnx")  # exports once; later calls reuse the session
            columns["onnxruntime (CPU)"] = best_of(args.runs, path, package, cpu, backend="onnx")
        print(f"\n512 x 512 x {args.slices} phantom thorax (seed 1), read -> segment -> score:")
        print_side_by_side(columns, truth)
        fast, naive = (columns[name][0]["total_s"] for name in ("ROI crop + model spacing", "naive full-res"))
        print(f"speed-up of the ROI pipeline over the naive path: {naive / fast:.1f}x")

        if args.large:
            big, large = Path(tmp) / "ct300.nii", thorax(300)
            write_image(large.ct, big)
            command = [sys.executable, __file__, "--child", str(big), str(device), str(args.threads)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            gpu = "" if figures["gpu_peak_mb"] is None else f", peak GPU memory {figures['gpu_peak_mb']:.0f} MiB"
            print(f"\n512 x 512 x 300 (child process): peak RSS {figures['peak_mb']:.0f} MiB{gpu}")
            print_side_by_side({"ROI crop + model spacing": (figures["timings"], figures["agatston"])},
                               large.truth()["scores"]["total"]["agatston"])


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        torch.set_num_threads(int(sys.argv[4]))
        child_peak_memory(Path(sys.argv[2]), torch.device(sys.argv[3]))
    else:
        main()
