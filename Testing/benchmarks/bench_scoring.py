"""Benchmark (prints figures, not a test): full scoring and incremental rescoring of a 512x512x64 CT.

Targets (issue 2): full scoring <= 100 ms, rescoring after a one-slice brush edit <= 20 ms, one CPU core.
Run: OMP_NUM_THREADS=1 .venv/bin/python Testing/benchmarks/bench_scoring.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from CACScoringLib.scoring import IncrementalScorer, ScoringParams, score_volume  # noqa: E402
from CACScoringLib.volume import CTVolume, ScanInfo  # noqa: E402


def make_case(seed: int = 0, shape=(64, 512, 512), plaques_per_artery: int = 12):
    """Noisy soft tissue with bone-like structures and ellipsoidal plaques labelled per artery."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(40.0, 20.0, size=shape).astype(np.float32)
    hu[:, 400:460, 220:290] = 700.0  # spine: calcium-dense, unlabelled
    labels = np.zeros(shape, np.uint8)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for artery in range(1, 5):
        for _ in range(plaques_per_artery):
            cz, cy, cx = rng.integers(4, shape[0] - 4), rng.integers(150, 350), rng.integers(150, 350)
            r = rng.uniform(1.5, 5.0)
            box = (slice(cz - 3, cz + 4), slice(cy - 6, cy + 7), slice(cx - 6, cx + 7))
            inside = ((zz[box[0]] - cz) * 3.0) ** 2 + ((yy[:, box[1]] - cy) * 0.4) ** 2 + (
                (xx[:, :, box[2]] - cx) * 0.4
            ) ** 2 <= (r * 0.6) ** 2
            hu[box][inside] = rng.uniform(150, 900)
            labels[box][inside] = artery
    ct = CTVolume(hu, spacing=(0.4, 0.4, 3.0), info=ScanInfo(slice_thickness_mm=3.0, kvp=120.0))
    return ct, labels


def best_of(fn, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main() -> None:
    ct, labels = make_case()
    params = ScoringParams(mass_calibration_factor=0.8)
    result = score_volume(ct, labels, params)
    print(f"volume {ct.array.shape[::-1]} (x, y, z), {int((labels > 0).sum())} labelled voxels, "
          f"{result.total.lesions} 3D lesions, total Agatston {result.total.agatston:.1f}")
    best, median = best_of(lambda: score_volume(ct, labels, params))
    print(f"full scoring:          best {best * 1e3:7.1f} ms   median {median * 1e3:7.1f} ms   (target <= 100 ms)")

    scorer = IncrementalScorer(ct, labels, params)
    rng = np.random.default_rng(1)
    yy, xx = np.ogrid[:512, :512]

    def brush_edit():
        z = int(rng.integers(0, 64))
        cy, cx = rng.integers(150, 350, size=2)
        stroke = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25  # a 5-pixel-radius brush dab
        edited = scorer.labels.copy()
        edited[z][stroke] = int(rng.integers(0, 5))
        return edited, z

    edits = [brush_edit() for _ in range(15)]
    iterator = iter(edits)

    def apply_known():
        edited, z = next(iterator)
        scorer.update(edited, [z])

    best, median = best_of(apply_known, repeats=15)
    print(f"rescore, slice given:  best {best * 1e3:7.1f} ms   median {median * 1e3:7.1f} ms   (target <= 20 ms)")
    edits = [brush_edit() for _ in range(15)]
    iterator = iter(edits)

    def apply_diffed():
        edited, _ = next(iterator)
        scorer.update(edited)

    best, median = best_of(apply_diffed, repeats=15)
    print(f"rescore, slices found by diff: best {best * 1e3:5.1f} ms   median {median * 1e3:5.1f} ms")
    assert scorer.result.to_dict() == score_volume(ct, scorer.labels, params).to_dict()
    print("incremental result equals full recompute: yes")


if __name__ == "__main__":
    main()
