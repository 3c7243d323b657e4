"""The lesion classifier: patches cut around each candidate, its scope, its decisions in the pipeline, training.

Expected patches are sliced out of the test volumes here by hand; the pipeline test uses a stand-in network
whose decision is a known function of its input channels."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from test_inference import WINDOW, NearestCentre, box_only, package, thorax
from test_training_tasks import COARSE_PHANTOMS, calcium_everywhere_package
from torch import nn

from CACScoringLib.errors import InputError
from CACScoringLib.inference import heart_roi_heuristic, segment
from CACScoringLib.inference.lesions import (
    INPUT_CHANNELS,
    classifier_decisions,
    classifier_inputs,
    classifier_scope,
    find_candidates,
)
from CACScoringLib.labels import LABEL_ID
from CACScoringLib.models import ModelPackage, load_package, make_config, validate_config
from CACScoringLib.phantom import make_thorax_phantom
from CACScoringLib.training import load_config, train
from CACScoringLib.training.lesion_classifier import reference_classes

torch.set_num_threads(1)
CPU = torch.device("cpu")
LOW, HIGH = WINDOW


def lesion_config(patch=(3, 8, 8), inplane=None, max_mm3=200.0, min_voxels=3) -> dict:
    config = make_config("Classifier", 3, patch, hu_window=WINDOW, inplane_spacing_mm=inplane, task="lesion_classifier")
    config.update(max_candidate_mm3=max_mm3, min_candidate_voxels=min_voxels)
    return config


def test_patches_are_cut_around_each_candidate_centre():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-300.0, 120.0, (10, 40, 40)).astype(np.float32)
    hu[5, 20, 18:21] = 500.0  # centre (5, 20, 19)
    hu[0, 1, 1] = 800.0  # in a corner: the patch leaves the volume
    artery = rng.integers(0, 256, (4, 8, 30, 30), dtype=np.uint8)  # a crop starting at (2, 10, 10)
    candidates = find_candidates(hu, 130.0)
    bar, corner = candidates.components[5, 20, 18], candidates.components[0, 1, 1]
    patches = classifier_inputs(hu, artery, (2, 10, 10), candidates, np.array([bar, corner]), lesion_config(), (0.8, 0.8, 3.0))
    assert patches.shape == (2, len(INPUT_CHANNELS), 3, 8, 8)

    # Bar: the box starts at (5 - 1, 20 - 4, 19 - 4).
    np.testing.assert_allclose(patches[0, 0], np.clip((hu[4:7, 16:24, 15:23] - LOW) / (HIGH - LOW), 0, 1), rtol=1e-6)
    mask = np.zeros((3, 8, 8))
    mask[1, 4, 3:6] = 1
    np.testing.assert_array_equal(patches[0, 1], mask)
    for channel in range(4):  # crop coordinates: (4 - 2, 16 - 10, 15 - 10)
        np.testing.assert_allclose(patches[0, 2 + channel], artery[channel, 2:5, 6:14, 5:13] / 255.0, rtol=1e-6)

    # Corner: box starts at (-1, -3, -3); outside the CT the window's low end (0), no candidate, no probability.
    assert (patches[1, 0, 0] == 0).all() and (patches[1, 0, :, :3] == 0).all()
    np.testing.assert_allclose(patches[1, 0, 1:, 3:, 3:], np.clip((hu[0:2, 0:5, 0:5] - LOW) / (HIGH - LOW), 0, 1), rtol=1e-6)
    assert patches[1, 1].sum() == 1 and patches[1, 1, 1, 4, 4] == 1
    assert (patches[1, 2:] == 0).all()  # the probability crop starts at z = 2


def test_patches_of_a_finer_ct_are_resampled_to_the_classifier_spacing():
    # HU linear in x on a 0.4 mm grid: bilinear resampling of a ramp is exact, so the 0.8 mm pixel j of the
    # patch reads the native ramp at x = start + 2j + 0.5.
    x = np.arange(80, dtype=np.float32)
    hu = np.broadcast_to(-150.0 + 3.0 * x, (6, 80, 80)).copy()  # up to 87 HU: below the threshold
    hu[3, 40, 40] = 2000.0  # the one candidate
    candidates = find_candidates(hu, 130.0)
    patches = classifier_inputs(
        hu, np.zeros((4, 6, 80, 80), np.uint8), (0, 0, 0), candidates, np.array([1]), lesion_config(inplane=0.8), (0.4, 0.4, 3.0)
    )
    assert patches.shape == (1, 6, 3, 8, 8)
    start = 40 - 8  # 16 native pixels around x = 40
    expected = (-150.0 + 3.0 * (start + 2 * np.arange(8) + 0.5) - LOW) / (HIGH - LOW)
    np.testing.assert_allclose(patches[0, 0, 0, 0], expected, atol=1e-5)  # slice 2, away from the bright voxel


def test_scope_is_the_roi_and_a_size_range():
    hu = np.zeros((6, 30, 30), np.float32)
    hu[1, 2, 2:6] = 300.0  # outside the ROI
    hu[3, 10:12, 10:12] = 300.0  # 4 voxels inside
    hu[3, 25, 25:27] = 300.0  # a 2-voxel speck inside
    hu[2:5, 14:20, 14:20] = 300.0  # 108 voxels inside
    candidates = find_candidates(hu, 130.0)
    roi = (slice(0, 6), slice(5, 30), slice(5, 30))
    spacing, voxel = (0.5, 0.5, 2.0), 0.5 * 0.5 * 2.0
    small, speck, large = (candidates.components[3, y, x] for y, x in ((10, 10), (25, 25), (15, 15)))
    np.testing.assert_array_equal(classifier_scope(candidates, roi, spacing, lesion_config(max_mm3=4 * voxel)), [small])
    both = classifier_scope(candidates, roi, spacing, lesion_config(max_mm3=108 * voxel))
    np.testing.assert_array_equal(both, sorted([small, large]))
    with_specks = classifier_scope(candidates, roi, spacing, lesion_config(max_mm3=108 * voxel, min_voxels=2))
    np.testing.assert_array_equal(with_specks, sorted([small, speck, large]))


def test_classifier_says_whether_and_the_vote_which_artery():
    probabilities = np.array(
        [
            [0.2, 0.0, 0.1, 0.7, 0.0],  # coronary, the vote kept it as LAD: LAD
            [0.2, 0.0, 0.1, 0.7, 0.0],  # coronary, the vote dropped it: the classifier's LCX
            [0.6, 0.0, 0.4, 0.0, 0.0],  # not coronary: dropped although the vote kept it
            [0.45, 0.1, 0.15, 0.1, 0.2],  # coronary by a small margin, vote dropped it: RCA
        ]
    )
    vote = np.array([LABEL_ID["LAD"], 0, LABEL_ID["RCA"], 0])
    expected = [LABEL_ID["LAD"], LABEL_ID["LCX"], 0, LABEL_ID["RCA"]]
    np.testing.assert_array_equal(classifier_decisions(probabilities, vote), expected)


def test_reference_class_is_the_majority_label_background_included():
    hu = np.zeros((1, 3, 12), np.float32)
    hu[0, 1, 0:5] = 300.0  # 3 LAD + 2 unlabelled voxels: LAD
    hu[0, 1, 7:12] = 300.0  # 2 RCA + 3 unlabelled: not coronary
    labels = np.zeros(hu.shape, np.uint8)
    labels[0, 1, 0:3] = LABEL_ID["LAD"]
    labels[0, 1, 7:9] = LABEL_ID["RCA"]
    candidates = find_candidates(hu, 130.0)
    np.testing.assert_array_equal(reference_classes(candidates, np.array([1, 2]), labels), [LABEL_ID["LAD"], 0])


class PeakRule(nn.Module):
    """Lesion classifier stand-in: not coronary when the candidate's peak is above 1000 HU, else RCA."""

    def forward(self, x):
        mask = x[:, 1]
        peak = (x[:, 0] * mask).amax(dim=(1, 2, 3))
        background = 100.0 * (peak - (1000.0 - LOW) / (HIGH - LOW))
        arteries = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(len(x), 4)
        return torch.cat([background[:, None], arteries], dim=1)


def test_lesion_classifier_component_replaces_the_vote_in_its_scope(monkeypatch):
    ct = thorax()
    box_only(monkeypatch)
    ct.array[1, 60, 40:44] = 300.0  # 4 voxels the network calls LM in a 10-voxel candidate ...
    ct.array[1, 60, 44:50] = 140.0  # ... 40%: the vote drops it, the classifier keeps it as its RCA
    ct.array[8:10, 40:44, 40:44] = 1200.0  # 32 voxels (216 mm3 > 200): out of scope, the vote keeps it as RCA
    ct.array[9, 60, 60:62] = 1200.0  # a 2-voxel speck: out of scope too, RCA by the vote
    classifier = ModelPackage(Path("lc"), lesion_config(), {"id": "lc"}, PeakRule().eval(), CPU)
    judged = []
    classifier.network.register_forward_hook(lambda module, args, output: judged.append(len(output)))
    plain = segment(ct, package(NearestCentre()), device="cpu").labels
    seg = segment(ct, package(NearestCentre(), components={"lesion_classifier": classifier}), device="cpu")

    assert not plain[1, 60, 40:50].any()
    assert (seg.labels[1, 60, 40:50] == LABEL_ID["RCA"]).all()
    assert (plain[6:9, 50:53, 50:53] == LABEL_ID["RCA"]).all()  # the 1200 HU blob (27 voxels) ...
    assert not seg.labels[6:9, 50:53, 50:53].any()  # ... rejected: its peak is above 1000 HU
    assert (seg.labels[8:10, 40:44, 40:44] == LABEL_ID["RCA"]).all()  # too large for the classifier
    assert (seg.labels[9, 60, 60:62] == LABEL_ID["RCA"]).all()  # too small for it
    # Coronary by the classifier, kept by the vote: the network's artery, not the classifier's RCA.
    for (z, y, x), artery in (((3, 44, 44), "LM"), ((3, 44, 50), "LAD"), ((6, 50, 44), "LCX")):
        assert (seg.labels[z : z + 3, y : y + 3, x : x + 3] == LABEL_ID[artery]).all()
    assert not seg.labels[2:5, 1:4, 1:4].any()  # outside the ROI: never a candidate
    assert judged == [5]  # the four blobs and the restored candidate, in one pass


def test_lesion_classifier_configs_are_checked():
    config = lesion_config()
    assert config["in_channels"] == len(INPUT_CHANNELS) == 6
    assert config["labels"] == make_config()["labels"]
    with pytest.raises(InputError, match="3D patches of 6 channels"):
        validate_config({**config, "in_channels": 1})
    with pytest.raises(InputError, match="max_candidate_mm3"):
        validate_config({**config, "max_candidate_mm3": -1})
    assert load_config(Path("configs/default_lesion_classifier.yaml"))["task"] == "lesion_classifier"
    minimal = ["task=lesion_classifier", "loss.name=ce", "data.source=phantom"]
    with pytest.raises(InputError, match="data.segmenter"):
        load_config(None, [*minimal, "augment.flip_prob=0"])
    with pytest.raises(InputError, match="flip_prob must be 0"):
        load_config(None, [*minimal, "data.segmenter=x"])


def tiny_overrides(tmp_path: Path, segmenter: Path) -> list[str]:
    return [
        "data.source=phantom",
        f"data.phantom={COARSE_PHANTOMS}",
        f"data.segmenter={segmenter}",
        "model.inplane_spacing_mm=3.2",
        "model.kwargs={channels: [4, 8], strides: [[1, 2, 2], [2, 2, 2]], num_res_units: 0}",
        "data.patch_size=[3, 8, 8]",
        "train.epochs=2",
        "train.batch_size=8",
        "export.version='9.9'",
        f"output_dir={tmp_path / 'lc'}",
        "train.progress=false",
    ]


def test_tiny_lesion_classifier_trains_packages_and_runs_in_inference(tmp_path, monkeypatch):
    segmenter = calcium_everywhere_package(tmp_path / "calcium")
    config = load_config(Path("configs/default_lesion_classifier.yaml"), tiny_overrides(tmp_path, segmenter))
    result = train(config)
    assert {"val_coronary_balanced_accuracy", "val_balanced_accuracy", "val_recall_per_class"} <= set(result.history[-1])

    # The cached targets of a validation phantom are its candidates' majority labels, computed here by hand.
    phantom = make_thorax_phantom(seed=1000, shape=(16, 64, 64), compute_scores=False, **config["data"]["phantom"]["options"])
    roi = heart_roi_heuristic(phantom.ct).slices
    components, _ = ndimage.label(phantom.ct.array >= 130.0, structure=np.ones((3, 3, 3), bool))
    expected = []
    for number in np.unique(components[roi]):
        voxels = components == number
        if number == 0 or voxels.sum() < 3 or voxels.sum() * 3.2 * 3.2 * 6.0 > 1500.0:
            continue
        expected.append(int(np.bincount(phantom.labels[voxels], minlength=5).argmax()))
    (cache,) = (tmp_path / "lc" / "candidates").glob("*/phantom-1000.npz")
    with np.load(cache) as cached:
        assert sorted(cached["targets"].tolist()) == sorted(expected)
        assert cached["inputs"].shape[1:] == (6, 3, 8, 8)

    package = load_package(result.package_dir)
    assert set(package.components) == {"lesion_classifier"}
    assert package.version == "9.9"
    assert package.metadata["segmenter"]["version"] == load_package(segmenter).version
    assert package.metadata["lesion_classifier"]["accuracy"]["val_coronary_balanced_accuracy"] == pytest.approx(result.best_metric)
    judged = []
    package.components["lesion_classifier"].network.register_forward_hook(lambda m, a, output: judged.append(len(output)))
    seg = segment(phantom.ct, package, device="cpu")
    assert judged == [len(expected)]
    assert not seg.labels[phantom.ct.array < 130.0].any()

    # A second run reads every case's candidates from the cache: nothing is segmented again.
    def no_segmenting(*args, **kwargs):
        raise AssertionError("candidates were not read from the cache")

    monkeypatch.setattr("CACScoringLib.training.lesion_classifier.case_items", no_segmenting)
    again = train(load_config(Path("configs/default_lesion_classifier.yaml"), [*tiny_overrides(tmp_path, segmenter), "train.epochs=1"]))
    assert again.history[0]["train_loss"] == pytest.approx(result.history[0]["train_loss"])

    # Phantoms of the same seeds drawn with other options are other cases: their cached items are not reused.
    noisier = COARSE_PHANTOMS.replace("options: {", "options: {noise_hu: 30.0, ")
    with pytest.raises(AssertionError, match="not read from the cache"):
        train(load_config(Path("configs/default_lesion_classifier.yaml"), [*tiny_overrides(tmp_path, segmenter), f"data.phantom={noisier}"]))


def test_balanced_accuracy_is_the_mean_recall_of_the_classes_present():
    from sklearn.metrics import balanced_accuracy_score

    from CACScoringLib.training.lesion_classifier import _mean_recall

    truth, predicted = np.array([0, 0, 0, 2, 2, 4]), np.array([0, 0, 2, 2, 1, 4])
    matrix = np.zeros((5, 5), int)
    np.add.at(matrix, (truth, predicted), 1)
    assert _mean_recall(matrix) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    with pytest.warns(UserWarning):  # sklearn agrees, warning about the predicted class 1 that is not in the truth
        assert _mean_recall(matrix) == pytest.approx(balanced_accuracy_score(truth, predicted))


def test_shipping_a_package_keeps_its_lesion_classifier(tmp_path, monkeypatch):
    import importlib.util
    import json

    from CACScoringLib.models import build_network, save_package

    spec = importlib.util.spec_from_file_location("evaluate_default_model", Path("scripts/evaluate_default_model.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    resources = tmp_path / "Resources"
    (resources / "models").mkdir(parents=True)
    (resources / "models.json").write_text(json.dumps({"models": []}), encoding="utf-8")
    monkeypatch.setattr(script, "resources_dir", lambda: resources)

    segmenter = load_package(calcium_everywhere_package(tmp_path / "segmenter"))
    classifier_config = lesion_config()
    classifier = build_network(classifier_config)
    trained = save_package(tmp_path / "trained", segmenter.network, segmenter.config, {"id": "cac-x", "version": "2.0", "title": "x"},
                           {"lesion_classifier": (classifier, classifier_config)})  # fmt: skip
    first = {"n_cases": 3, "phantom_options": {"bifurcation_clearance_mm": 5.0}, "targets_met": {"lesion_f1": False}}
    headline = {**first, "lookalikes_per_case": []}
    shipped = script.ship(load_package(trained), headline, resources / "models" / "cac-x", register_default=True)

    package = load_package(shipped)
    assert set(package.components) == {"lesion_classifier"}
    for name, value in classifier.state_dict().items():
        assert torch.equal(package.components["lesion_classifier"].network.state_dict()[name], value), name
    assert package.metadata["held_out_evaluation"] == first
    assert "earlier_held_out_evaluations" not in package.metadata
    registry = json.loads((resources / "models.json").read_text(encoding="utf-8"))
    assert registry["default"] == "cac-x" and registry["models"][0]["path"] == "models/cac-x"
    # The registry pins the whole package through its checksums.json.
    assert registry["models"][0]["sha256"] == hashlib.sha256((shipped / "checksums.json").read_bytes()).hexdigest()

    # The same weights evaluated again ship under a new version and keep the earlier figures, marked with the
    # version they were shipped as (the aorta option did not exist then: drawn where it fell).
    second = {"n_cases": 4, "phantom_options": {"descending_aorta_clearance_mm": 5.0}, "targets_met": {"lesion_f1": True}}
    script.ship(load_package(trained), {**second, "lookalikes_per_case": []}, shipped, register_default=True, version="2.0.1")
    package = load_package(shipped)
    assert package.version == "2.0.1" and package.metadata["held_out_evaluation"] == second
    earlier = {**first, "version": "2.0", "phantom_options": {"bifurcation_clearance_mm": 5.0, "descending_aorta_clearance_mm": None}}
    assert package.metadata["earlier_held_out_evaluations"] == [earlier]
    assert json.loads((resources / "models.json").read_text(encoding="utf-8"))["models"][0]["version"] == "2.0.1"

    # Other weights are another model: the earlier figures do not carry over to it.
    retrained = save_package(tmp_path / "retrained", segmenter.network, segmenter.config, {"id": "cac-x", "version": "3.0", "title": "x"},
                             {"lesion_classifier": (build_network(classifier_config), classifier_config)})  # fmt: skip
    script.ship(load_package(retrained), {**second, "lookalikes_per_case": []}, shipped, register_default=True)
    assert "earlier_held_out_evaluations" not in load_package(shipped).metadata


def test_candidates_the_vote_dropped_are_read_off_their_patch_and_repeated():
    from types import SimpleNamespace

    from CACScoringLib.training.lesion_classifier import LesionClassifierTask, vote_missed

    patch = np.zeros((len(INPUT_CHANNELS), 1, 2, 5), np.float32)
    patch[1, 0, 0, :] = 1.0  # a 5-voxel candidate; the network calls 2 of them LAD (0.6), 1 split (0.3 + 0.3)
    patch[3, 0, 0, :2] = 0.6
    patch[3:5, 0, 0, 2] = 0.3
    patch[2:6, 0, 1, :] = 1.0  # confident calls outside the candidate count for nothing
    assert vote_missed(patch, 0.7)  # 3 of 5 called: 0.6 < 0.7
    assert not vote_missed(patch, 0.6)
    assert not vote_missed(np.zeros_like(patch), 0.5)  # no candidate voxel in view: nothing to say

    items = [{"target": 2, "vote_missed": True}, {"target": 0, "vote_missed": True}, {"target": 4, "vote_missed": False}]
    task = SimpleNamespace(train_items=items, config={"data": {"missed_positive_repeats": 3}})
    listed = LesionClassifierTask.epoch_items(task, np.random.default_rng(0))
    assert [id(item) for item in listed] == [id(items[0]), id(items[1]), id(items[2]), id(items[0]), id(items[0])]
    with pytest.raises(InputError, match="missed_positive_repeats"):
        load_config(Path("configs/default_lesion_classifier.yaml"), ["data.missed_positive_repeats=0"])
