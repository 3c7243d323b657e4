"""Benchmark (prints figures, not a test): what Apply costs the Slicer GUI thread before segmentation starts,
for a 300 x 512 x 512 CT on a slicer-core scene.

Before: the CT was written as float32 .nii.gz on the calling thread. Now: the calling thread copies the voxels
out of the volume node and starts the job; its job thread writes an uncompressed .nii.
Run: .venv/bin/python Testing/benchmarks/bench_slicer_ct_handoff.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "CACScoring"))

from CACScoringSlicerLib import inference_job  # noqa: E402
from CACScoringSlicerLib.geometry import add_volume_node, ct_from_volume_node  # noqa: E402
from CACScoringSlicerLib.standalone import create_standalone_scene  # noqa: E402

from CACScoringLib.volume import CTVolume  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1500, size=(300, 512, 512)).astype(np.float32)
    scene = create_standalone_scene().scene
    node = add_volume_node(scene, CTVolume(array=array, spacing=(0.5, 0.5, 1.0)), "CT")
    folder = Path(tempfile.mkdtemp())

    start = time.perf_counter()
    ct = ct_from_volume_node(node)
    copy_s = time.perf_counter() - start
    start = time.perf_counter()
    sitk.WriteImage(ct.to_sitk(), str(folder / "ct.nii.gz"), True)
    compressed_s = time.perf_counter() - start

    ct = ct_from_volume_node(node)
    start = time.perf_counter()
    job = inference_job.InferenceJob(ct, model="", python=sys.executable)
    job._cancel_requested = True  # write the CT, start no process: only the hand-off is measured
    job.start()
    returned_s = time.perf_counter() - start
    job._thread.join()
    written_s = time.perf_counter() - start
    print(f"volume node -> CTVolume copy (GUI thread, both ways):  {copy_s:.2f} s")
    print(f"before: float32 .nii.gz written on the GUI thread:     {compressed_s:.2f} s")
    print(f"now: start() returns after                             {returned_s * 1000:.1f} ms")
    print(f"now: uncompressed .nii written by the job thread after {written_s:.2f} s")
    job.cleanup()


if __name__ == "__main__":
    main()
