"""Patient-wise k-fold splits, resampling to the network grid, class-balanced slices and crops."""

import numpy as np
import pytest

from CACScoringLib.errors import InputError
from CACScoringLib.training.config import load_config
from CACScoringLib.training.data import (
    SAMPLING_KEY,
    Case,
    patient_split,
    resample_case,
    slice_items,
    train_transforms,
)

PATIENTS = [f"p{i}" for i in range(10)]


def test_kfold_validation_sets_are_disjoint_and_cover_every_patient():
    folds = [patient_split(PATIENTS * 2, folds=5, fold=k, seed=3, val_fraction=0.2) for k in range(5)]
    vals = [set(val) for _, val in folds]
    assert all(len(v) == 2 for v in vals)
    assert set().union(*vals) == set(PATIENTS) and sum(len(v) for v in vals) == len(PATIENTS)
    for train, val in folds:
        assert not set(train) & set(val) and set(train) | set(val) == set(PATIENTS)
    assert folds == [patient_split(PATIENTS, 5, k, 3, 0.2) for k in range(5)]  # seeded
    assert folds != [patient_split(PATIENTS, 5, k, 4, 0.2) for k in range(5)]


def test_holdout_split_and_too_few_patients():
    train, val = patient_split(PATIENTS, folds=1, fold=0, seed=0, val_fraction=0.25)
    assert len(val) == 3 and len(train) == 7 and not set(train) & set(val)
    with pytest.raises(InputError, match="3 patients cannot make 5 folds"):
        patient_split(PATIENTS[:3], folds=5, fold=0, seed=0, val_fraction=0.2)


def _case(shape=(4, 40, 40), spacing=(0.4, 0.4, 3.0), calcium_slices=(1,)):
    image = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    for z in calcium_slices:
        image[z, 10:20, 10:20] = 500.0
        labels[z, 10:20, 10:20] = 2
    return Case("c", "c", image, labels, spacing)


def test_resample_to_network_spacing_keeps_calcium_area():
    case = resample_case(_case(), inplane_mm=0.8, slice_mm=None)
    assert case.image.shape == (4, 20, 20) and case.spacing == (0.8, 0.8, 3.0)
    assert set(np.unique(case.labels)) == {0, 2}
    area_mm2 = (case.labels[1] == 2).sum() * 0.8 * 0.8
    assert area_mm2 == pytest.approx(10 * 10 * 0.4 * 0.4, rel=0.35)
    assert resample_case(case, 0.8, None) is case  # already on the grid


def test_slice_items_keep_every_calcium_slice_and_ratio_negatives():
    cases = [_case(shape=(10, 24, 24), calcium_slices=(2, 5))]
    items = slice_items(cases, negative_ratio=1.5, rng=np.random.default_rng(0))
    positives = [i for i in items if i["label"].any()]
    assert sorted(i["slice"] for i in positives) == [2, 5]
    assert len(items) - len(positives) == 3
    assert all(i["image"].shape == (1, 24, 24) for i in items)


def test_context_slices_are_the_neighbours_with_the_ends_repeated():
    case = _case(shape=(6, 24, 24), calcium_slices=(0, 3))
    case.image[:] = np.arange(6, dtype=np.float32)[:, None, None]  # each slice holds its own index
    items = slice_items([case], 0.0, np.random.default_rng(0), context_slices=5)
    shown = {item["slice"]: item["image"][:, 0, 0].tolist() for item in items}
    assert shown == {0: [0, 0, 0, 1, 2], 3: [1, 2, 3, 4, 5]}
    assert all(item["label"].shape == (1, 24, 24) for item in items)
    for bad in ("2", "0", "true"):
        with pytest.raises(InputError, match="context_slices"):
            load_config(None, ["data.source=phantom", f"model.context_slices={bad}"])
    with pytest.raises(InputError, match="for 2D models"):
        load_config(None, ["data.source=phantom", "model.spatial_dims=3", "model.context_slices=3"])


def test_positive_crops_contain_calcium():
    config = load_config(None, ["data.source=phantom", "data.patch_size=[8, 8]", "data.pos_fraction=1.0", "data.samples_per_image=4"])
    transforms = train_transforms(config, spatial_dims=2)
    transforms.set_random_state(seed=0)
    case = _case(calcium_slices=(1,))
    crops = transforms({"image": case.image[1][None], "label": case.labels[1][None]})
    assert len(crops) == 4
    for crop in crops:
        assert tuple(crop["image"].shape) == (1, 8, 8)
        assert (crop["label"] > 0).any()
        assert float(crop["image"].max()) <= 1.0 + 0.1  # HU windowed to [0, 1] (plus intensity shift/noise)


def test_artery_slice_repeats_list_rare_artery_slices_more_often():
    case = _case(shape=(6, 40, 40), calcium_slices=(1, 3))  # LAD (2) on slices 1 and 3
    case.labels[3, 30:32, 30:32] = 1  # slice 3 also holds LM
    case.labels[4, 5:7, 5:7] = 4  # slice 4: RCA only
    items = slice_items([case], 1.0, np.random.default_rng(0), artery_repeats={"LM": 3, "RCA": 2})
    positives = [item["slice"] for item in items if item["label"].any()]
    assert sorted(positives) == [1, 3, 3, 3, 4, 4]
    assert len(items) - len(positives) == 3  # negatives drawn per listed calcium slice, capped at the 3 there are
    for bad in ("{LX: 2}", "{LM: 0}", "{LM: 1.5}"):
        with pytest.raises(InputError, match="artery_slice_repeats"):
            load_config(None, ["data.source=phantom", f"data.artery_slice_repeats={bad}"])


def test_hard_negative_crops_centre_on_lookalikes():
    case = _case(calcium_slices=(1,))
    case.image[1, 30:33, 30:33] = 1000.0  # aortic calcium: not coronary, label 0
    case.lookalikes = np.zeros_like(case.labels)
    case.lookalikes[1, 30:33, 30:33] = 1
    overrides = ["data.source=phantom", "data.patch_size=[8, 8]", "data.samples_per_image=40", "augment.rotate_prob=0"]
    overrides += ["augment.shift_prob=0", "augment.noise_prob=0", "augment.smooth_prob=0"]
    config = load_config(None, [*overrides, "data.pos_fraction=0.25", "data.hard_negative_fraction=0.5"])
    transforms = train_transforms(config, spatial_dims=2)
    transforms.set_random_state(seed=0)
    [item] = [i for i in slice_items([case], 0.0, np.random.default_rng(0), hard_negatives=True) if i["slice"] == 1]
    crops = transforms(item)
    assert all(SAMPLING_KEY not in crop for crop in crops)
    on_lookalike = sum(float(crop["image"].max()) == pytest.approx(0.8) for crop in crops)  # 1000 HU in [-200, 1300]
    on_calcium = sum(bool((crop["label"] > 0).any()) for crop in crops)
    # 8 x 8 crops of a 40 x 40 slice: random centres rarely reach either 3 x 3 or 10 x 10 target.
    assert 14 <= on_lookalike <= 30 and 6 <= on_calcium <= 22
    with pytest.raises(InputError, match="at most 1 - pos_fraction"):
        train_transforms(load_config(None, [*overrides, "data.pos_fraction=0.6", "data.hard_negative_fraction=0.5"]), 2)


def test_every_lookalike_slice_is_drawn_on_top_of_the_random_negatives():
    case = _case(shape=(12, 24, 24), calcium_slices=(2, 5))
    case.lookalikes = np.zeros_like(case.labels)
    case.lookalikes[[5, 8, 9], 3:5, 3:5] = 1  # slice 5 also holds calcium: a positive, not a look-alike negative
    for seed in range(5):
        items = slice_items([case], 1.0, np.random.default_rng(seed), hard_negatives=True, every_lookalike_slice=True)
        negatives = [i["slice"] for i in items if not i["label"].any()]
        assert {8, 9} <= set(negatives) and len(negatives) == 2 + 2  # look-alikes plus 1.0 x 2 calcium slices
        assert len(set(negatives)) == len(negatives)
    without = [slice_items([case], 1.0, np.random.default_rng(s), hard_negatives=True) for s in range(20)]
    assert any(not {8, 9} <= {i["slice"] for i in items} for items in without)  # a random draw can miss them
    with pytest.raises(InputError, match="hard_negative_slices"):
        load_config(None, ["data.source=phantom", "data.hard_negative_slices=2"])


def test_patch_size_must_match_the_dimensions():
    config = load_config(None, ["data.source=phantom", "data.patch_size=[8, 8, 8]"])
    with pytest.raises(InputError, match="needs 2 values"):
        train_transforms(config, spatial_dims=2)
