"""Inference pipeline: labels on the CT grid, ROI paste-back, threshold rule, ensemble/TTA, ONNX, cancel.

Most tests use networks whose logits are a known function of the input, so the expected label map is
computed here independently of the pipeline."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage
from torch import nn

from CACScoringLib.errors import InputError
from CACScoringLib.inference import (
    Cancelled,
    auto_batch_size,
    heart_roi_heuristic,
    segment,
    write_segmentation_outputs,
)
from CACScoringLib.inference.pipeline import _crop_with_context
from CACScoringLib.inference.roi import RegionOfInterest
from CACScoringLib.labels import LABEL_ID
from CACScoringLib.models import (
    ModelPackage,
    build_network,
    load_package,
    make_config,
    save_package,
    validate_config,
)
from CACScoringLib.volume import CTVolume

torch.set_num_threads(1)
WINDOW = (-200.0, 1300.0)
CENTRES_HU = (0.0, 300.0, 600.0, 900.0, 1200.0)  # background, LM, LAD, LCX, RCA
CPU = torch.device("cpu")


class NearestCentre(nn.Module):
    """Logit of class k = -(x - c_k)^2 on the windowed intensity: argmax = nearest centre. Pointwise, so
    flips, tiling and gaussian blending leave it unchanged."""

    def __init__(self, centres_hu=CENTRES_HU):
        super().__init__()
        centres = (torch.tensor(centres_hu) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
        self.register_buffer("centres", centres)

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return -50.0 * (x - self.centres.view(shape)) ** 2


def nearest_centre_labels(hu, centres_hu=CENTRES_HU):
    clipped = np.clip(hu, *WINDOW)
    return np.argmin(np.abs(clipped[None] - np.asarray(centres_hu)[:, None, None, None]), axis=0).astype(np.uint8)


def package(network, dims=2, inplane=None, patch=None, name="ctl", components=None, context=1):
    patch = patch or ((32, 32) if dims == 2 else (4, 32, 32))
    config = make_config(
        "UNet", dims, patch, hu_window=WINDOW, inplane_spacing_mm=inplane, context_slices=context, strides=(1,)
    )
    return ModelPackage(Path(name), config, {"id": name, "version": "9"}, network.eval(), CPU, components or {})


BLOBS = {  # (z, y, x) corner of a 3x3x3 blob -> HU, all inside the mediastinum
    (3, 44, 44): 300.0,
    (3, 44, 50): 600.0,
    (6, 50, 44): 900.0,
    (6, 50, 50): 1200.0,
}


def thorax(nz=10, size=96, origin=(-70.0, -80.0, 25.0)) -> CTVolume:
    """Body ellipse (40 HU), two lungs (-850 HU), four calcium blobs between them, a bright blob in the air
    outside the body (outside any heart ROI)."""
    _, y, x = np.mgrid[:nz, :size, :size].astype(np.float32)
    c = size / 2
    hu = np.full((nz, size, size), -1000.0, np.float32)
    hu[((y - c) / (0.42 * size)) ** 2 + ((x - c) / (0.47 * size)) ** 2 <= 1] = 40.0
    for side in (-1, 1):
        hu[((y - c) / (0.3 * size)) ** 2 + ((x - c - side * 0.28 * size) / (0.12 * size)) ** 2 <= 1] = -850.0
    for (z, yy, xx), value in BLOBS.items():
        hu[z : z + 3, yy : yy + 3, xx : xx + 3] = value
    hu[2:5, 1:4, 1:4] = 1200.0
    return CTVolume(hu, (1.5, 1.5, 3.0), origin)


def roi_mask(shape, bounds):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(lo, hi) for lo, hi in bounds)] = True
    return mask


@pytest.mark.parametrize("dims", [2, 3])
def test_labels_on_ct_grid_with_roi_pasted_back(dims, tmp_path):
    ct = thorax()
    seg = segment(ct, package(NearestCentre(), dims), device="cpu")
    assert seg.labels.shape == ct.shape and seg.labels.dtype == np.uint8
    assert seg.roi.method == "heuristic"
    inside = roi_mask(ct.shape, seg.roi.bounds)
    assert not inside[2:5, 1:4, 1:4].any(), "the blob outside the body must be outside the heart ROI"
    assert all(inside[z, y, x] for z, y, x in BLOBS)
    expected = nearest_centre_labels(ct.array)
    expected[(ct.array < 130) | ~inside] = 0
    np.testing.assert_array_equal(seg.labels, expected)
    assert sorted(np.unique(seg.labels)) == [0, 1, 2, 3, 4]
    assert seg.to_dict()["model_id"] == "ctl" and seg.to_dict()["model_version"] == "9"

    written = write_segmentation_outputs(seg, ct, tmp_path / "out")
    image = sitk.ReadImage(str(written["labels"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), seg.labels)
    np.testing.assert_allclose(image.GetOrigin(), ct.origin)
    np.testing.assert_allclose(image.GetSpacing(), ct.spacing)


def test_coarser_inference_spacing_keeps_large_lesions():
    ct = thorax()
    ct.array[4:7, 40:50, 40:50] = 900.0  # 15 x 15 mm plate, larger than the 3 mm inference pixels
    # The whole image: a plate this size in the toy's mediastinum would bend its heart region.
    seg = segment(ct, package(NearestCentre(), 2, inplane=3.0), device="cpu", roi="whole")
    assert seg.labels.shape == ct.shape
    plate = np.zeros(ct.shape, bool)
    plate[4:7, 40:50, 40:50] = True
    core = ndimage.binary_erosion(plate, np.ones((1, 5, 5), bool))
    assert (seg.labels[core] == LABEL_ID["LCX"]).all()
    assert set(np.unique(seg.labels[plate])) <= {0, LABEL_ID["LCX"]}
    assert not seg.labels[ct.array < 130].any()


@pytest.mark.parametrize("threshold", [130.0, 200.0])
def test_no_label_below_threshold(threshold):
    ct = thorax()
    ct.array[5, 46:49, 40:43] = 150.0
    ct.array[5, 40:43, 46:49] = 129.0
    # Background centre far below the window: every voxel's nearest centre is an artery.
    seg = segment(ct, package(NearestCentre((-5000.0, 300, 600, 900, 1200)), 2), threshold_hu=threshold, device="cpu")
    inside = roi_mask(ct.shape, seg.roi.bounds)
    np.testing.assert_array_equal(seg.labels > 0, (ct.array >= threshold) & inside)


def manual_probabilities(networks, ct, tta):
    window = torch.from_numpy(np.clip((ct.array - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1))[:, None]
    flips = [(), (2,), (3,)] if tta else [()]
    total = 0
    with torch.no_grad():
        for network in networks:
            for flip in flips:
                x = torch.flip(window, flip) if flip else window
                probs = torch.softmax(network(x), dim=1)
                total = total + (torch.flip(probs, flip) if flip else probs)
    return (total / (len(networks) * len(flips))).permute(1, 0, 2, 3).numpy()


def test_ensemble_and_flip_tta_are_means_of_softmax():
    ct = thorax(nz=4, size=32)
    networks = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        networks.append(nn.Conv2d(1, 5, 3, padding=1).eval())  # not flip-invariant: TTA changes the result
    members = [package(n, 2, name=f"m{i}") for i, n in enumerate(networks)]
    seg = segment(ct, members, tta=True, roi="whole", return_probabilities=True, device="cpu")
    assert seg.probabilities.shape == (5, *ct.shape) and seg.probabilities.dtype == np.float16
    expected = manual_probabilities(networks, ct, tta=True)
    np.testing.assert_allclose(seg.probabilities.astype(np.float32), expected, atol=2e-3)
    assert np.abs(manual_probabilities(networks, ct, tta=False) - expected).max() > 1e-2
    assert seg.model_id == "m0+m1"


def test_multiplicative_ensemble_is_tversky_times_baseline_squared_times_image():
    ct = thorax(nz=4, size=32)
    networks = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        networks.append(nn.Conv2d(1, 5, 3, padding=1).eval())
    members = [package(n, 2, name=f"m{i}") for i, n in enumerate(networks)]
    seg = segment(ct, members, tta=True, roi="whole", return_probabilities=True, device="cpu", ensemble="multiplicative")
    tversky, baseline = (manual_probabilities([n], ct, tta=True) for n in networks)
    image = np.clip((ct.array - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1)
    scores = tversky[1:] * baseline[1:] ** 2 * image
    np.testing.assert_allclose(seg.probabilities[1:].astype(np.float32), scores, atol=2e-3)
    np.testing.assert_allclose(seg.probabilities[0].astype(np.float32), 1 - scores.max(axis=0), atol=2e-3)
    with pytest.raises(InputError, match="combines 2 models"):
        segment(ct, members[:1], roi="whole", device="cpu", ensemble="multiplicative")
    with pytest.raises(InputError, match="ensemble rule 'median' is unknown"):
        segment(ct, members, roi="whole", device="cpu", ensemble="median")


class OneChannel(nn.Module):
    """NearestCentre on one input channel: with 3 context slices, channel 0 is the slice below."""

    def __init__(self, channel):
        super().__init__()
        self.channel = channel
        self.nearest = NearestCentre()

    def forward(self, x):
        return self.nearest(x[:, self.channel : self.channel + 1])


@pytest.mark.parametrize("channel, shift", [(0, -1), (1, 0), (2, 1)])
def test_context_model_sees_the_neighbouring_slices_as_channels(channel, shift):
    ct = thorax()
    seg = segment(ct, package(OneChannel(channel), context=3), roi="whole", return_probabilities=True, device="cpu")
    # Channel c of slice z shows slice z + c - 1, the end slice standing in beyond the CT.
    shown = ct.array[np.clip(np.arange(ct.shape[0]) + shift, 0, ct.shape[0] - 1)]
    np.testing.assert_array_equal(seg.probabilities.argmax(axis=0), nearest_centre_labels(shown))


def test_context_beyond_the_roi_comes_from_the_ct():
    hu = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    region = RegionOfInterest(((1, 9), (0, 4), (0, 4)), "heuristic")
    crop = _crop_with_context(hu, region, 5)
    # Slices 1..8 with two context slices each side: slice 0 of the CT, then slice 0 repeated below it.
    np.testing.assert_array_equal(crop[:, 0, 0], [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9])
    np.testing.assert_array_equal(_crop_with_context(hu, region, 1), hu[1:9])


def test_context_model_warns_when_slices_differ_from_training():
    ct = thorax(nz=4, size=32)  # 3 mm slices
    model = package(OneChannel(1), context=3)
    model.config["preprocessing"]["slice_spacing_mm"] = 3.5
    assert segment(ct, model, roi="whole", device="cpu").warnings == []  # within a quarter of 3.5 mm
    model.config["preprocessing"]["slice_spacing_mm"] = 5.0
    [warning] = segment(ct, model, roi="whole", device="cpu").warnings
    assert "trained on 5 mm slices" in warning and "3 mm apart" in warning


def test_ensemble_members_must_share_their_context():
    ct = thorax(nz=4, size=32)
    members = [package(OneChannel(0), context=3, name="ctx"), package(NearestCentre(), name="plain")]
    with pytest.raises(InputError, match="differ in dimensions or preprocessing"):
        segment(ct, members, roi="whole", device="cpu")


def test_3d_ensemble_mean_probabilities():
    ct = thorax(nz=6, size=48)
    centres = [CENTRES_HU, (0.0, 400.0, 500.0, 1000.0, 1100.0)]
    members = [package(NearestCentre(c), 3, patch=(4, 16, 16), name=f"m{i}") for i, c in enumerate(centres)]
    seg = segment(ct, members, tta=True, roi="whole", return_probabilities=True, device="cpu")
    window = torch.from_numpy(np.clip((ct.array - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1))[None, None]
    with torch.no_grad():
        expected = sum(torch.softmax(m.network(window), dim=1) for m in members)[0].numpy() / 2
    np.testing.assert_allclose(seg.probabilities.astype(np.float32), expected, atol=2e-3)


def test_onnx_backend_agrees_with_pytorch(tmp_path):
    torch.manual_seed(0)
    config = make_config("UNet", 2, (32, 32), hu_window=WINDOW, inplane_spacing_mm=None, channels=(4, 8), strides=(2,))
    folder = save_package(tmp_path / "tiny", build_network(config), config)
    model = load_package(folder)
    ct = thorax(nz=4, size=48)
    eager = segment(ct, model, roi="whole", return_probabilities=True, device="cpu")
    onnx = segment(ct, model, roi="whole", return_probabilities=True, backend="onnx")
    assert onnx.backend == "onnx"
    diff = np.abs(eager.probabilities.astype(np.float32) - onnx.probabilities.astype(np.float32)).max()
    assert diff < 2e-3
    assert (eager.labels != onnx.labels).mean() < 1e-3


def test_device_fallback_and_cuda_request(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ct = thorax(nz=4, size=48)
    assert segment(ct, package(NearestCentre()), device="auto", roi="whole").device == "cpu"
    with pytest.raises(InputError, match="no CUDA"):
        segment(ct, package(NearestCentre()), device="cuda")


def test_bad_inputs_are_input_errors():
    ct = thorax(nz=4, size=48)
    model = package(NearestCentre())
    flat = CTVolume(ct.array[0], ct.spacing)
    nan = ct.with_array(ct.array.copy())
    nan.array[0, 0, 0] = np.nan
    cases = [
        ({"ct": flat}, "3D"),
        ({"ct": nan, "roi": "whole"}, "NaN"),
        ({"backend": "tensorrt"}, "backend"),
        ({"roi": "lungs"}, "roi mode"),
        ({"threshold_hu": float("nan")}, "threshold"),
        ({"model": []}, "empty model list"),
        ({"model": [model, package(NearestCentre(), 3)]}, "ensemble"),
        ({"batch_size": 0}, "batch size"),
    ]
    for overrides, message in cases:
        kwargs = {"ct": ct, "model": model, "device": "cpu", **overrides}
        with pytest.raises(InputError, match=message):
            segment(**kwargs)
    roi_model = package(NearestCentre((0.0, 300.0)), 2)
    roi_model.config["task"] = "heart_roi"
    with pytest.raises(InputError, match="not a calcium segmentation"):
        segment(ct, roi_model, device="cpu")


def test_no_default_model_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "models.json").write_text('{"default": null, "models": []}')
    monkeypatch.setattr("CACScoringLib.models.registry.resources_dir", lambda: tmp_path)
    with pytest.raises(InputError, match="no trained default"):
        segment(thorax(nz=2, size=32), model=None, device="cpu")


def test_progress_and_cancel():
    ct = thorax(nz=6, size=48)
    seen = []
    segment(ct, package(NearestCentre()), progress=lambda f, m: seen.append(f), batch_size=2, device="cpu")
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 5
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        segment(ct, package(NearestCentre()), cancel=cancel, device="cpu")
    midway = threading.Event()
    calls = []

    def progress(fraction, message):
        calls.append(fraction)
        if "segmenting" in message:
            midway.set()

    with pytest.raises(Cancelled):
        segment(ct, package(NearestCentre()), progress=progress, cancel=midway, batch_size=2, device="cpu")
    assert max(calls) < 1.0


def test_each_lesion_gets_its_majority_artery():
    ct = thorax()
    ct.array[5, 60:62, 40:46] = 600.0  # 12 LAD voxels
    ct.array[5, 62, 40:46] = 300.0  # 6 LM voxels touching them: one lesion
    seg = segment(ct, package(NearestCentre()), roi="whole", device="cpu")  # the vote alone, no heart region
    assert (seg.labels[5, 60:63, 40:46] == LABEL_ID["LAD"]).all()


def test_candidates_are_kept_whole_or_dropped_by_majority():
    ct = thorax()
    ct.array[8, 60, 40:46] = 300.0  # 6 voxels the network calls LM ...
    ct.array[8, 60, 46:50] = 140.0  # ... and 4 >= 130 HU it calls background: 60% called, labelled whole
    ct.array[1, 60, 40:44] = 300.0  # 4 called voxels in a 10-voxel candidate (e.g. a speck in a rib) ...
    ct.array[1, 60, 44:50] = 140.0  # ... 40% called: dropped whole
    seg = segment(ct, package(NearestCentre()), roi="whole", device="cpu")  # the vote alone, no heart region
    assert (seg.labels[8, 60, 40:50] == LABEL_ID["LM"]).all()
    assert not seg.labels[1, 60, 40:50].any()
    lenient = package(NearestCentre())
    lenient.config["lesion_call_fraction"] = 0.4  # the package's own vote share: 40% called now keeps it
    assert (segment(ct, lenient, device="cpu").labels[1, 60, 40:50] == LABEL_ID["LM"]).all()
    lenient.config["lesion_call_fraction"] = 1.5
    with pytest.raises(InputError, match="lesion_call_fraction 1.5 must lie in"):
        validate_config(lenient.config)  # as load_package checks a package's config



def test_candidates_cut_by_the_roi_edge_are_judged_whole(monkeypatch):
    from CACScoringLib.inference import pipeline

    ct = thorax()
    box_only(monkeypatch)  # the crop's edge alone: the heart region's own filter is tested on its own
    monkeypatch.setattr(pipeline, "MAX_AERATED_SHARE", 1.0)  # the toy's crop edge lies in its lung
    (_, _), (y0, y1), (x0, x1) = heart_roi_heuristic(ct).bounds
    # Outside the ROI the network sees nothing, so a candidate's voxels there count as not called.
    ct.array[8, y0 + 5, x1 - 3 : x1 + 9] = 300.0  # a rib end: 3 of its 12 voxels inside the ROI, 25% called
    ct.array[8, y0 + 9, x1 - 8 : x1 + 2] = 300.0  # a plaque on the edge: 8 of 10 inside, 80% called
    seg = segment(ct, package(NearestCentre()), device="cpu")
    assert seg.roi.bounds[1:] == ((y0, y1), (x0, x1))
    assert not seg.labels[8, y0 + 5].any()  # not a 3-voxel lesion cut off at the crop's edge
    assert (seg.labels[8, y0 + 9, x1 - 8 : x1 + 2] == LABEL_ID["LM"]).all()  # whole, past the edge too

def test_heart_region_drops_candidates_mostly_outside_and_clears_the_rest_past_its_edge(monkeypatch):
    from CACScoringLib.anatomy import HeartRegion
    from CACScoringLib.inference import pipeline
    from CACScoringLib.inference.roi import RegionOfInterest

    ct = thorax()
    inside = np.zeros(ct.shape, bool)
    inside[:, :, :46] = True  # the heart region: x < 46 on the CT grid
    heart = HeartRegion(inside, (1, 1, 1), ct.shape, blood_pool_hu=40.0)
    whole = tuple((0, n) for n in ct.shape)
    monkeypatch.setattr(pipeline, "heart_roi_heuristic", lambda ct: RegionOfInterest(whole, "heuristic", heart=heart))
    ct.array[8, 60, 40:48] = 300.0  # 6 of 8 voxels inside: kept, its 2 voxels past the edge cleared
    ct.array[8, 70, 43:50] = 300.0  # 3 of 7 inside: mostly outside, dropped whole
    labels = segment(ct, package(NearestCentre()), device="cpu").labels
    assert (labels[8, 60, 40:46] == LABEL_ID["LM"]).all() and not labels[8, 60, 46:48].any()
    assert not labels[8, 70].any()
    assert not labels[~inside].any()


def test_a_calcification_half_in_lung_is_not_coronary(monkeypatch):
    from CACScoringLib.inference import pipeline

    ct = thorax()
    ct.array[5, 47:49, 62:64] = 600.0  # on the right lung's medial border (lung from x 64 at y 48)
    assert (segment(ct, package(NearestCentre()), roi="whole", device="cpu").labels[5, 47:49, 62:64] == 0).all()
    monkeypatch.setattr(pipeline, "MAX_AERATED_SHARE", 1.0)
    assert segment(ct, package(NearestCentre()), roi="whole", device="cpu").labels[5, 47:49, 62:64].all()


def box_only(monkeypatch) -> None:
    """The heuristic ROI's box without its heart region, so that no candidate is dropped as outside the heart."""
    from CACScoringLib.inference import pipeline
    from CACScoringLib.inference.roi import RegionOfInterest

    monkeypatch.setattr(pipeline, "heart_roi_heuristic", lambda ct: RegionOfInterest(heart_roi_heuristic(ct).bounds, "heuristic"))


class CentreBrightness(nn.Module):
    """False-positive classifier stand-in: calcium when the patch centre is above 450 HU."""

    def forward(self, x):
        centre = x[:, 0, x.shape[2] // 2, x.shape[3] // 2]
        cut = (450.0 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])
        return torch.stack([torch.zeros_like(centre), 100.0 * (centre - cut)], dim=1)


def test_false_positive_component_removes_rejected_candidates():
    ct = thorax()
    fp_config = make_config("Classifier", 2, (8, 8), hu_window=WINDOW, inplane_spacing_mm=None, task="fp_classifier")
    fp = ModelPackage(Path("fp"), fp_config, {"id": "fp"}, CentreBrightness().eval(), CPU)
    seg = segment(ct, package(NearestCentre(), components={"fp_classifier": fp}), device="cpu")
    expected = nearest_centre_labels(ct.array)
    expected[(ct.array < 130) | ~roi_mask(ct.shape, seg.roi.bounds)] = 0
    expected[expected == LABEL_ID["LM"]] = 0  # the 300 HU blob is the only one under 450 HU
    np.testing.assert_array_equal(seg.labels, expected)


def test_heart_roi_heuristic_and_fallback():
    ct = thorax()
    region = heart_roi_heuristic(ct)
    (z0, z1), (y0, y1), (x0, x1) = region.bounds
    assert region.method == "heuristic" and not region.warnings
    assert y0 <= 44 and y1 >= 53 and x0 <= 44 and x1 >= 53
    assert (y1 - y0) * (x1 - x0) < 0.8 * 96 * 96  # a real crop, not the whole image
    water = ct.with_array(np.where(ct.array > -900, 0.0, -1000.0).astype(np.float32))
    fallback = heart_roi_heuristic(water)
    assert fallback.method == "whole" and fallback.bounds == ((0, 10), (0, 96), (0, 96))
    assert "lungs" in fallback.warnings[0]


def test_auto_batch_size_is_memory_aware():
    config = make_config("UNet", 2, (32, 32), channels=(16, 32), strides=(2,))
    small = auto_batch_size(config, (64, 64), CPU)
    large = auto_batch_size(config, (512, 512), CPU)
    assert 1 <= large < small <= 32
