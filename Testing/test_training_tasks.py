"""Training tasks beyond segmentation: slice classifier with CAM (seed 003), per-vessel regression (seed 004),
the cascade's heart ROI and false-positive stages (seed 001) and the joined cascade package in inference."""

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from CACScoringLib.data.manifest import ManifestCase, write_manifest
from CACScoringLib.errors import InputError
from CACScoringLib.io import write_image, write_labels
from CACScoringLib.labels import ARTERIES
from CACScoringLib.phantom import make_thorax_phantom
from CACScoringLib.training import load_config, train
from CACScoringLib.training.classification import binary_metrics, candidate_patches
from CACScoringLib.training.data import Case, balanced_indices, phantom_heart_mask
from CACScoringLib.training.export import load_task_model
from CACScoringLib.training.regression import agreement, vessel_targets
from CACScoringLib.volume import CTVolume

torch.set_num_threads(1)
SPACING = (0.8, 0.8, 3.0)
QUIET = ["train.progress=false"]


def slice_dataset(folder: Path, n_patients: int = 4, shape=(8, 48, 48)) -> Path:
    """Noise at 40 HU; even slices carry a labelled 5 x 5 blob of 700 HU, odd slices nothing."""
    cases = []
    for seed in range(n_patients):
        rng = np.random.default_rng(seed)
        image = rng.normal(40.0, 15.0, shape).astype(np.float32)
        labels = np.zeros(shape, np.uint8)
        for z in range(0, shape[0], 2):
            y, x = rng.integers(8, 36, size=2)
            image[z, y : y + 5, x : x + 5] = 700.0
            labels[z, y : y + 5, x : x + 5] = 2
        ct = CTVolume(array=image, spacing=SPACING)
        cases.append(
            ManifestCase(
                id=f"p{seed}",
                image=write_image(ct, folder / "images" / f"p{seed}.nii.gz"),
                labels=write_labels(labels, ct, folder / "labels" / f"p{seed}.nii.gz"),
                spacing=SPACING,
                shape=shape,
            )
        )
    return write_manifest(folder / "manifest.json", "synthetic", cases)


def test_binary_metrics_hand_worked():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    prob = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4, 0.05])
    metrics = binary_metrics(truth, prob)
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["sensitivity"] == pytest.approx(2 / 3)
    assert metrics["specificity"] == pytest.approx(4 / 5)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # AUC = share of (positive, negative) pairs ranked correctly: 0.9 beats 5, 0.6 beats 4, 0.2 beats 2.
    assert metrics["auc"] == pytest.approx(11 / 15)
    only_negative = binary_metrics(np.zeros(3), np.array([0.1, 0.6, 0.2]))
    assert only_negative["sensitivity"] is None and only_negative["auc"] is None
    assert only_negative["balanced_accuracy"] == pytest.approx(2 / 3)


def test_balanced_indices_draw_both_classes_equally():
    positive = np.array([True] * 3 + [False] * 10)
    index = balanced_indices(positive, np.random.default_rng(0))
    assert positive[index].sum() == 10 and (~positive[index]).sum() == 10
    assert set(np.flatnonzero(~positive)) <= set(index.tolist())  # every majority item once


def test_slice_classifier_learns_separable_slices_writes_cam_and_reloads(tmp_path):
    manifest = slice_dataset(tmp_path / "data")
    config = load_config(
        Path("configs/slice_classifier_cam.yaml"),
        [
            f"data.manifest={manifest}",
            f"output_dir={tmp_path / 'run'}",
            "model.network=Classifier",
            "model.kwargs={channels: [8, 16], strides: [2, 2], num_res_units: 0}",
            "data.patch_size=[32, 32]",
            "data.cam_slices=3",
            "split.val_fraction=0.25",
            "optim.lr=0.01",
            "train.epochs=3",
            "train.batch_size=8",
            "augment.rotate_prob=0",
            *QUIET,
        ],
    )
    result = train(config)
    best = next(row for row in result.history if row["epoch"] == result.best_epoch)
    assert best["val_accuracy"] >= 0.9 and best["val_auc"] >= 0.95
    cams = sorted((tmp_path / "run" / "cam").glob("*.png"))
    assert len(cams) == 3
    assert matplotlib.image.imread(cams[0]).ndim == 3  # a real RGB(A) image
    # Calcium slices come first in the CAM selection: all three are even (blob) slices here.
    assert all(int(p.stem.split("slice")[1]) % 2 == 0 for p in cams)
    network, network_config = load_task_model(result.package_dir)
    assert network_config["task"] == "slice_classification"
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(network(x), result.model.eval()(x))


def test_vessel_targets_and_agreement_hand_worked():
    case = Case("c", "c", np.zeros((1, 1, 1), np.float32), None, (1.0, 1.0, 1.0),
                {"LM": {"agatston": 0.0}, "LAD": {"agatston": 99.0}, "LCX": {"agatston": 9.0}, "RCA": {"agatston": 0.0}})  # fmt: skip
    np.testing.assert_allclose(vessel_targets(case), [0.0, math.log(100.0), math.log(10.0), 0.0], rtol=1e-6)
    with pytest.raises(InputError, match="RCA"):
        vessel_targets(Case("d", "d", case.image, None, case.spacing, {k: {"agatston": 1.0} for k in ARTERIES[:3]}))
    reference = np.array([[0.0, 10.0, 0.0, 0.0], [0.0, 50.0, 50.0, 0.0], [0.0, 0.0, 0.0, 500.0]])
    predicted = np.array([[0.0, 12.0, 0.0, 0.0], [0.0, 40.0, 80.0, 0.0], [0.0, 0.0, 0.0, 350.0]])
    result = agreement(reference, predicted)
    assert result["per_vessel"]["LAD"]["mae"] == pytest.approx((2 + 10 + 0) / 3)
    assert result["per_vessel"]["total"]["mae"] == pytest.approx((2 + 20 + 150) / 3)
    assert result["per_vessel"]["LM"]["pearson_r"] is None  # constant reference
    assert result["per_vessel"]["LAD"]["pearson_r"] == pytest.approx(np.corrcoef([10, 50, 0], [12, 40, 0])[0, 1])
    # totals 10 / 100 / 500 -> 12 / 120 / 350: 1-10 vs 11-100, 11-100 vs 101-400, >400 vs 101-400
    assert result["risk_category_accuracy"] == 0.0


@pytest.mark.parametrize("backbone", ["CNN", "SECNN", "ViT"])
def test_vessel_regression_loss_decreases_on_phantoms(tmp_path, backbone):
    kwargs = "{patch_size: 8, hidden_size: 32, mlp_dim: 64}" if backbone == "ViT" else "{channels: [8, 16]}"
    config = load_config(
        Path("configs/vessel_regression.yaml"),
        [
            "data.source=phantom",
            "data.phantom={train_seeds: [0, 6], val_seeds: [1000, 1002], shape: [12, 64, 64], options: {spacing: [1.6, 1.6, 3.0]}}",
            "data.volume_size=[12, 32, 32]",
            f"model.network={backbone}",
            f"model.kwargs={kwargs}",
            f"output_dir={tmp_path / 'run'}",
            "optim.lr=0.01",
            "train.epochs=6",
            "train.batch_size=6",
            *QUIET,
        ],
    )
    result = train(config)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0]
    last = result.history[-1]
    assert set(last["val_per_vessel"]) == {*ARTERIES, "total"}
    assert 0.0 <= last["val_risk_category_accuracy"] <= 1.0
    network, network_config = load_task_model(result.package_dir)
    assert network_config["network"] == backbone and network_config["outputs"] == list(ARTERIES)
    assert tuple(network(torch.rand(1, 12, 32, 32)).shape) == (1, 4)


def test_phantom_heart_mask_is_the_heart_ellipsoid():
    phantom = make_thorax_phantom(seed=3, shape=(24, 128, 128), spacing=(1.6, 1.6, 5.0), compute_scores=False)
    mask = phantom_heart_mask(phantom).astype(bool)
    a, b, _ = phantom.anatomy["heart_semi_axes_mm"]
    voxel_ml = np.prod(phantom.ct.spacing) / 1000.0
    # The ellipsoid may leave the field of view at the top or bottom, so the count is at most its volume.
    assert 0.5 * (4 / 3 * math.pi * a * b * b / 1000.0) < mask.sum() * voxel_ml < 1.05 * (4 / 3 * math.pi * a * b * b / 1000.0)
    inside = phantom.ct.array[mask]
    assert 30.0 < np.median(inside) < 60.0  # blood 40 and myocardium 50 HU


def test_candidate_patches_follow_labels():
    image = np.full((5, 64, 64), 40.0, np.float32)
    labels = np.zeros(image.shape, np.uint8)
    image[2, 20:23, 20:23] = 500.0  # coronary
    labels[2, 20:23, 20:23] = 3
    image[1:4, 40:44, 40:44] = 800.0  # unlabelled calcium
    case = Case("c", "c", image, labels, (0.8, 0.8, 3.0))
    items = candidate_patches(case, (16, 16), 130.0, -200.0)
    assert sorted(item["target"] for item in items) == [0, 1]
    positive = next(item for item in items if item["target"] == 1)
    assert positive["image"].shape == (1, 16, 16)
    # centre of mass (21, 21) -> the 3x3 block sits at rows/cols 7..9 of the 16 x 16 patch
    assert (positive["image"][0, 7:10, 7:10] == 500.0).all() and positive["image"][0].max() == 500.0


COARSE_PHANTOMS = "{train_seeds: [0, 4], val_seeds: [1000, 1002], shape: [16, 64, 64], options: {spacing: [3.2, 3.2, 6.0]}}"


def calcium_everywhere_package(folder: Path) -> Path:
    """A calcium stage whose every pixel says LAD (weights zero, final bias favours label 2): every voxel
    >= 130 HU in the ROI becomes a candidate for the false-positive stage."""
    from CACScoringLib.models import build_network, make_config, save_package

    config = make_config("UNet", spatial_dims=2, patch_size=(64, 64), inplane_spacing_mm=3.2,
                         channels=(4, 8), strides=(2,), num_res_units=0)  # fmt: skip
    network = build_network(config)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        final_bias = [p for name, p in network.named_parameters() if name.endswith("bias") and p.shape == (5,)][-1]
        final_bias[2] = 5.0
    return save_package(folder, network, config, {"version": "test"})


def test_cascade_stages_train_join_and_run_in_inference(tmp_path):
    from CACScoringLib.inference import segment
    from CACScoringLib.models.package import load_package
    from CACScoringLib.training.cascade import main as cascade_main

    # Its quality bounds (heart Dice > 0.45 after 6 epochs) were measured on CPU; on a GPU the engine would train
    # with float16 AMP, other numerics. The stages' GPU code paths are those of the segmentation and slice
    # classifier tests, which run on the GPU where there is one.
    on_cpu = ["train.device=cpu"]
    heart = train(
        load_config(
            Path("configs/cascade_heart_roi.yaml"),
            [
                *on_cpu,
                f"data.phantom={COARSE_PHANTOMS}",
                "model.inplane_spacing_mm=3.2",
                "model.kwargs={channels: [8, 16], strides: [2], num_res_units: 0, norm: instance}",
                "data.patch_size=[64, 64]",
                "data.samples_per_image=4",
                "optim.lr=0.03",
                "train.epochs=6",
                "train.batch_size=8",
                f"output_dir={tmp_path / 'heart'}",
                *QUIET,
            ],
        )
    )
    # Calling every pixel heart scores Dice 0.17 and 0.23 on these two validation phantoms (heart 9% and 13%).
    assert heart.best_metric > 0.45
    fp = train(
        load_config(
            Path("configs/cascade_fp_classifier.yaml"),
            [
                *on_cpu,
                "data.source=phantom",
                f"data.phantom={COARSE_PHANTOMS}",
                "model.inplane_spacing_mm=3.2",
                "model.kwargs={channels: [4, 8], strides: [2, 2]}",
                "data.patch_size=[16, 16]",
                "train.epochs=2",
                "train.batch_size=8",
                f"output_dir={tmp_path / 'fp'}",
                *QUIET,
            ],
        )
    )
    assert {"val_accuracy", "val_sensitivity", "val_specificity", "val_auc"} <= set(fp.history[-1])
    calcium = calcium_everywhere_package(tmp_path / "calcium")
    out = tmp_path / "cascade"
    assert cascade_main([str(calcium), str(heart.package_dir), str(fp.package_dir), str(out)]) == 0
    assert cascade_main([str(heart.package_dir), str(calcium), str(fp.package_dir), str(tmp_path / "bad")]) == 2

    package = load_package(out)
    assert set(package.components) == {"heart_roi", "fp_classifier"}
    assert package.metadata["cascade"]["heart_roi"]["accuracy"]["val_dice"] == pytest.approx(heart.best_metric)
    judged = []
    package.components["fp_classifier"].network.register_forward_hook(lambda module, args, output: judged.append(len(output)))
    ct = make_thorax_phantom(seed=2000, shape=(16, 64, 64), spacing=(3.2, 3.2, 6.0), compute_scores=False).ct
    result = segment(ct, package, device="cpu")
    assert result.roi.method == "model"
    from scipy import ndimage

    crop = ct.array[result.roi.slices]
    _, candidates = ndimage.label(crop >= 130.0, structure=np.ones((3, 3, 3), bool))
    assert candidates > 0 and judged == [candidates]  # one patch per candidate, all in one pass
    assert not (result.labels[ct.array < 130.0]).any()
    assert set(np.unique(result.labels)) <= {0, 2}
