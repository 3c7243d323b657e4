"""Background inference of the Slicer module: a real child process segmenting a phantom written as NIfTI."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytestmark = [pytest.mark.slicer, pytest.mark.slow]


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
