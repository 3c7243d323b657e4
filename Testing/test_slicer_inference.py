"""Background inference of the Slicer module: a real child process segmenting a phantom written as NIfTI."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytestmark = [pytest.mark.slicer, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def no_process_left():
    yield
    import sys

    worker = sys.modules.get("CACScoringSlicerLib.inference_worker")  # imported: a test may have started it
    if worker is not None:
        worker.shutdown()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained but complete model package: enough to check the process plumbing, not accuracy."""
    import torch

    from CACScoringLib.models import build_network, make_config, save_package

    torch.manual_seed(0)
    config = make_config("UNet", 2, (32, 32), channels=(4, 8), strides=(2,), num_res_units=0)
    return save_package(tmp_path_factory.mktemp("models") / "tiny", build_network(config), config, {"id": "tiny"})


@pytest.fixture
def phantom_volume(slicer_scene, tmp_path):
    from CACScoringLib.phantom import make_thorax_phantom

    phantom = make_thorax_phantom(seed=3, shape=(6, 64, 64), spacing=(2.5, 2.5, 3.0), compute_scores=False)
    path = tmp_path / "phantom.nii.gz"
    sitk.WriteImage(phantom.ct.to_sitk(), str(path))
    return phantom, slicer_scene.volumes_logic.AddArchetypeVolume(str(path), "phantom", 0)


def test_process_segments_in_a_child_process_exactly_as_in_process(scene_logic, phantom_volume, tiny_model):
    from CACScoringSlicerLib.geometry import ct_from_volume_node
    from CACScoringSlicerLib.logic import ScoringOptions

    from CACScoringLib.inference import segment

    phantom, volume_node = phantom_volume
    seen = []
    options = ScoringOptions(model=str(tiny_model), device="cpu")
    node, result = scene_logic.process(volume_node, None, options, progress=lambda status: seen.append(status))

    expected = segment(ct_from_volume_node(volume_node), model=tiny_model, device="cpu").labels
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(node, volume_node), expected)
    assert seen[-1].state == "done" and seen[-1].progress == 1.0
    assert result.to_dict() == scene_logic.result.to_dict()
    assert not scene_logic.is_edited(node, volume_node)


def test_segmentation_warnings_reach_the_reader_and_the_report(scene_logic, phantom_volume, tmp_path):
    import json

    import torch
    from CACScoringSlicerLib.logic import SEGMENTATION_WARNINGS_ATTRIBUTE, ScoringOptions

    from CACScoringLib.models import build_network, make_config, save_package

    torch.manual_seed(0)
    config = make_config("UNet", 2, (32, 32), context_slices=3, channels=(4, 8), strides=(2,), num_res_units=0)
    config["preprocessing"]["slice_spacing_mm"] = 1.0  # the phantom's slices are 3 mm apart
    model = save_package(tmp_path / "context", build_network(config), config, {"id": "context"})
    _, volume_node = phantom_volume
    seen = []
    node, _ = scene_logic.process(volume_node, None, ScoringOptions(model=str(model), device="cpu"), seen.append)

    # This small phantom also has no lungs in view: the heart ROI falls back to the whole image.
    roi, context = seen[-1].warnings
    assert roi.startswith("heart ROI: no lungs found")
    assert "trained on 1 mm slices" in context and "3 mm apart" in context
    assert node.GetAttribute(SEGMENTATION_WARNINGS_ATTRIBUTE) == f"{roi}\n{context}"  # saved with the scene
    assert {roi, context} <= set(scene_logic.warnings())
    exported = json.loads(scene_logic.export(tmp_path / "report", "case")["json"].read_text(encoding="utf-8"))
    assert {roi, context} <= set(exported["warnings"])


def test_the_runs_blood_pool_is_the_contrast_check_of_the_live_scores(scene_logic, slicer_scene, tiny_model, tmp_path):
    from CACScoringSlicerLib.geometry import ct_from_volume_node
    from CACScoringSlicerLib.logic import ScoringOptions

    from CACScoringLib.anatomy import find_heart
    from CACScoringLib.phantom import make_thorax_phantom

    phantom = make_thorax_phantom(seed=3, shape=(24, 128, 128), spacing=(2.5, 2.5, 5.0), compute_scores=False)
    path = tmp_path / "chest.nii.gz"
    sitk.WriteImage(phantom.ct.to_sitk(), str(path))
    volume_node = slicer_scene.volumes_logic.AddArchetypeVolume(str(path), "chest", 0)
    heart, _ = find_heart(ct_from_volume_node(volume_node))
    seen = []
    scene_logic.process(volume_node, None, ScoringOptions(model=str(tiny_model), device="cpu"), seen.append)
    assert seen[-1].blood_pool_hu == pytest.approx(heart.blood_pool_hu)  # measured once, in the child
    contrast = scene_logic.result.contrast
    assert contrast.blood_pool_hu == pytest.approx(heart.blood_pool_hu) and not contrast.enhanced


def test_cancel_stops_the_child_process(scene_logic, phantom_volume, tiny_model):
    from CACScoringSlicerLib.logic import ScoringOptions

    _, volume_node = phantom_volume
    job = scene_logic.start_inference(volume_node, None, ScoringOptions(model=str(tiny_model), device="cpu"))
    job.cancel(grace_s=30)
    status = job.wait(timeout_s=60)
    assert status.state == "cancelled"
    job.cleanup()
    assert not job.workdir.exists()


def test_a_missing_model_fails_with_the_library_message(scene_logic, phantom_volume, tmp_path):
    from CACScoringSlicerLib.logic import ScoringOptions

    _, volume_node = phantom_volume
    job = scene_logic.start_inference(volume_node, None, ScoringOptions(model=str(tmp_path / "nowhere"), device="cpu"))
    status = job.wait(timeout_s=120)
    assert status.state == "failed"
    assert "nowhere" in status.message
    job.cleanup()


@pytest.fixture
def fresh_worker():
    """No session process yet; none left afterwards."""
    from CACScoringSlicerLib import inference_worker

    inference_worker.shutdown()
    yield inference_worker.WORKER
    inference_worker.shutdown()


def chest_volume(slicer_scene, tmp_path, seed):
    from CACScoringLib.phantom import make_thorax_phantom

    phantom = make_thorax_phantom(seed=seed, shape=(24, 128, 128), spacing=(2.5, 2.5, 5.0), compute_scores=False)
    path = tmp_path / f"chest{seed}.nii.gz"
    sitk.WriteImage(phantom.ct.to_sitk(), str(path))
    return slicer_scene.volumes_logic.AddArchetypeVolume(str(path), f"chest{seed}", 0)


def test_a_second_ct_runs_on_the_same_process_without_loading_the_model_again(scene_logic, slicer_scene, tiny_model,
                                                                             fresh_worker, tmp_path):
    from CACScoringSlicerLib.geometry import ct_from_volume_node
    from CACScoringSlicerLib.inference_runner import MODEL_LOADED_PREFIX
    from CACScoringSlicerLib.logic import ScoringOptions

    from CACScoringLib.inference import segment

    options = ScoringOptions(model=str(tiny_model), device="cpu")
    runs = []
    for seed in (3, 4):
        volume_node = chest_volume(slicer_scene, tmp_path, seed)
        log = []
        node, _ = scene_logic.process(volume_node, None, options,
                                      progress=lambda status, log=log: log.extend(status.log))
        expected = segment(ct_from_volume_node(volume_node), model=tiny_model, device="cpu").labels
        np.testing.assert_array_equal(scene_logic.labels_from_segmentation(node, volume_node), expected)
        loads = [line for line in log if line.startswith(MODEL_LOADED_PREFIX)]
        runs.append((fresh_worker.runner_pid, fresh_worker.process.pid, loads))
    (runner, launcher, first_loads), second = runs
    assert first_loads == [f"{MODEL_LOADED_PREFIX}{tiny_model} on cpu"]
    assert second == (runner, launcher, [])  # same process, model kept loaded


def test_a_job_cancelled_mid_run_stops_and_the_next_succeeds_on_the_same_process(scene_logic, slicer_scene, tiny_model,
                                                                                 fresh_worker, tmp_path):
    import time

    from CACScoringSlicerLib.geometry import ct_from_volume_node
    from CACScoringSlicerLib.logic import ScoringOptions

    from CACScoringLib.inference import segment

    options = ScoringOptions(model=str(tiny_model), device="cpu")
    volume_node = chest_volume(slicer_scene, tmp_path, 3)
    job = scene_logic.start_inference(volume_node, None, options)
    while job._process is None:  # the request is sent: the runner reads the CT and loads the model
        time.sleep(0.01)
    job.cancel(grace_s=30)
    assert job.wait(timeout_s=5).state == "cancelled"
    assert not job.labels_path.exists()
    job.cleanup()
    runner, launcher = fresh_worker.runner_pid, fresh_worker.process.pid

    node, _ = scene_logic.process(volume_node, None, options)
    expected = segment(ct_from_volume_node(volume_node), model=tiny_model, device="cpu").labels
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(node, volume_node), expected)
    assert (fresh_worker.runner_pid, fresh_worker.process.pid) == (runner, launcher)


def test_the_one_shot_runner_still_segments_one_ct(phantom_volume, tiny_model, tmp_path):
    import subprocess
    import sys

    from CACScoringSlicerLib import inference_runner
    from CACScoringSlicerLib.geometry import ct_from_volume_node
    from CACScoringSlicerLib.inference_job import library_root

    from CACScoringLib.inference import segment

    _, volume_node = phantom_volume
    ct = ct_from_volume_node(volume_node)
    sitk.WriteImage(ct.to_sitk(), str(tmp_path / "ct.nii"))
    done = subprocess.run(
        [sys.executable, inference_runner.__file__, "--input", str(tmp_path / "ct.nii"),
         "--output", str(tmp_path / "labels.nii"), "--model", str(tiny_model), "--device", "cpu"],
        capture_output=True, text=True, env={"PYTHONPATH": str(library_root()), "PATH": ""}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels.nii")))
    np.testing.assert_array_equal(labels, segment(ct, model=tiny_model, device="cpu").labels)


def test_the_serving_runner_keeps_two_models_and_reloads_a_rewritten_folder(slicer_scene, tiny_model, tmp_path,
                                                                           monkeypatch, capsys):
    import json
    import shutil
    import threading

    from CACScoringSlicerLib import inference_runner

    from CACScoringLib.phantom import make_thorax_phantom

    phantom = make_thorax_phantom(seed=3, shape=(6, 64, 64), spacing=(2.5, 2.5, 3.0), compute_scores=False)
    sitk.WriteImage(phantom.ct.to_sitk(), str(tmp_path / "ct.nii"))
    models = {name: shutil.copytree(tiny_model, tmp_path / name) for name in "ABC"}
    order = ["A", "B", "A", "C", "A", "B", "rewrite A", "A"]

    def requests():  # read one at a time, as from the pipe
        for step, name in enumerate(order):
            if name == "rewrite A":  # a retrained package saved into the same folder
                shutil.rmtree(models["A"])
                shutil.copytree(tiny_model, models["A"], copy_function=shutil.copy)  # new file times
                continue
            yield json.dumps({"input": str(tmp_path / "ct.nii"), "output": str(tmp_path / f"{step}.nii"),
                              "model": str(models[name]), "device": "cpu"}) + "\n"

    monkeypatch.setattr("sys.stdin", requests())
    assert inference_runner.serve(threading.Event()) == 0
    lines = capsys.readouterr().out.splitlines()
    loads = [line.removeprefix(inference_runner.MODEL_LOADED_PREFIX).split(" on ")[0] for line in lines
             if line.startswith(inference_runner.MODEL_LOADED_PREFIX)]
    # LRU of two: A, B loaded; A kept; C evicts B; A kept; B evicts C; the rewritten A is loaded again
    assert loads == [str(models[name]) for name in ("A", "B", "C", "B", "A")]
    assert [line for line in lines if line.startswith(inference_runner.JOB_END_PREFIX)] == ["job end: 0"] * 7


def test_a_process_killed_mid_job_fails_that_job_and_the_next_runs_on_a_new_one(scene_logic, slicer_scene, tiny_model,
                                                                                fresh_worker, tmp_path):
    import os
    import signal
    import time

    from CACScoringSlicerLib.geometry import ct_from_volume_node
    from CACScoringSlicerLib.logic import ScoringOptions

    from CACScoringLib.inference import segment

    options = ScoringOptions(model=str(tiny_model), device="cpu")
    volume_node = chest_volume(slicer_scene, tmp_path, 3)
    job = scene_logic.start_inference(volume_node, None, options)
    while not job._started:  # the fresh process has read the request: it now imports and loads the model
        time.sleep(0.01)
    launcher = fresh_worker.process.pid
    os.killpg(launcher, signal.SIGKILL)  # as an out-of-memory kill would
    status = job.wait(timeout_s=10)
    assert status.state == "failed" and "the segmentation process ended unexpectedly" in status.message
    job.cleanup()

    node, _ = scene_logic.process(volume_node, None, options)
    expected = segment(ct_from_volume_node(volume_node), model=tiny_model, device="cpu").labels
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(node, volume_node), expected)
    assert fresh_worker.process.pid != launcher
