"""Benchmark (prints figures, not a test): one Segment Editor stroke rescored by the Slicer logic on a
slicer-core scene, for 48 and 300 slices of 512 x 512 (issue target: <= 50 ms per stroke at 300 slices), split
into reading the segments back, finding the changed slices and scoring them; and finish_inference's share
that follows a run (labels into segments, live scoring started; target <= 0.5 s at 300 slices).
Run: .venv/bin/python Testing/benchmarks/bench_slicer_rescore.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "CACScoring"))

import slicer  # noqa: E402
from CACScoringSlicerLib.geometry import add_volume_node, oriented_image  # noqa: E402
from CACScoringSlicerLib.logic import CACScoringSceneLogic  # noqa: E402
from CACScoringSlicerLib.standalone import create_standalone_scene  # noqa: E402

from CACScoringLib.volume import CTVolume  # noqa: E402

STROKES = 12


def case(slices: int, rng) -> tuple[CTVolume, np.ndarray]:
    hu = rng.normal(40.0, 20.0, (slices, 512, 512)).astype(np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    for _ in range(slices // 2):  # a lesion every other slice on average, in all four arteries
        z, y, x = int(rng.integers(0, slices)), *rng.integers(150, 350, 2)
        hu[z, y : y + 4, x : x + 5] = 450.0
        labels[z, y : y + 4, x : x + 5] = rng.integers(1, 5)
    return CTVolume(hu, (0.5, 0.5, 1.0)), labels


def stroke(segmentation_node, volume_node, shape, rng) -> None:
    """A 5-pixel-radius brush dab merged into one segment, limited to its slice (as the Paint effect does)."""
    z, cy, cx = int(rng.integers(0, shape[0])), *rng.integers(150, 350, 2)
    yy, xx = np.ogrid[: shape[1], : shape[2]]
    mask = np.zeros(shape, np.uint8)
    mask[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = 1
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        oriented_image(mask, volume_node), segmentation_node, str(rng.choice(["LM", "LAD", "LCX", "RCA"])),
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MASK, (0, shape[2] - 1, 0, shape[1] - 1, z, z),
    )


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(slices: int, rng) -> None:
    scene = create_standalone_scene().scene
    logic = CACScoringSceneLogic(scene)
    ct, labels = case(slices, rng)
    volume_node = add_volume_node(scene, ct, "CT")
    start = time.perf_counter()
    segmentation_node = logic.apply_inference_labels(volume_node, labels)
    written = time.perf_counter() - start
    # As finish_inference does: the labels just written and the run's blood pool are handed over, not re-read.
    logic.start_live_scoring(volume_node, segmentation_node, None, labels, blood_pool_hu=40.0)
    finish = time.perf_counter() - start
    read, total = [], []
    for _ in range(STROKES):
        stroke(segmentation_node, volume_node, labels.shape, rng)
        read.append(timed(lambda: logic.labels_from_segmentation(segmentation_node, volume_node)))
        total.append(timed(logic.rescore))
    print(f"{slices:3d} x 512 x 512: rescore per stroke median {statistics.median(total) * 1e3:6.1f} ms "
          f"(best {min(total) * 1e3:6.1f}; the merged export it replaced {statistics.median(read) * 1e3:6.1f} ms); "
          f"finish_inference's share: labels into segments {written:.2f} s, with live scoring started {finish:.2f} s")


def main() -> None:
    rng = np.random.default_rng(0)
    for slices in (48, 300):
        measure(slices, rng)


if __name__ == "__main__":
    main()
