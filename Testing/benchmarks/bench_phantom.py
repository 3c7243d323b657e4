"""Benchmark (prints figures, not a test): thorax phantom generation, the default and the realistic options.

Run: .venv/bin/python Testing/benchmarks/bench_phantom.py
"""

from __future__ import annotations

import statistics
import time

from CACScoringLib.phantom import make_thorax_phantom
from CACScoringLib.phantom.distractors import KIND_ID

CASES = {
    "default 48 x 256 x 256": {},
    "chest 70 x 512 x 512, every distractor": {
        "field_of_view": "chest",
        "shape": (70, 512, 512),
        "spacing": (0.7, 0.7, 5.0),
        "distractors": dict.fromkeys(KIND_ID, 2),
    },
    "preset realchest (random grid)": {"preset": "realchest"},
}


def main() -> None:
    for name, options in CASES.items():
        times, voxels = [], []
        for seed in range(3):
            start = time.perf_counter()
            phantom = make_thorax_phantom(seed=seed, compute_scores=False, **options)
            times.append(time.perf_counter() - start)
            voxels.append(phantom.ct.array.size)
        print(f"{name}: median {statistics.median(times):.2f} s (max {max(times):.2f} s), {statistics.median(voxels) / 1e6:.1f} Mvoxel")


if __name__ == "__main__":
    main()
