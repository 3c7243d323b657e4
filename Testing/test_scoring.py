"""Scoring engine: hand-worked cases, an independent reference implementation, and incremental == full."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from CACScoringLib.errors import InputError
from CACScoringLib.labels import ARTERIES
from CACScoringLib.scoring import (
    PRESETS,
    IncrementalScorer,
    ScoringParams,
    cac_drs,
    calibration_factor_from_rois,
    kvp_hu_scale,
    risk_category,
    score_volume,
)
from CACScoringLib.volume import CTVolume, ScanInfo

NO_MIN = ScoringParams(min_area_mm2=None)


def make_ct(hu, spacing=(0.5, 0.5, 3.0), thickness=3.0, kvp=120.0):
    return CTVolume(np.asarray(hu, np.float32), spacing=spacing,
                    info=ScanInfo(slice_thickness_mm=thickness, kvp=kvp))


def single_lesion(peak, pixels=4, shape=(3, 12, 12)):
    """A square lesion of `pixels` pixels (0.25 mm² each) on slice 1, LAD, with the given peak HU."""
    hu = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    side = int(np.sqrt(pixels))
    hu[1, 2:2 + side, 2:2 + side] = 130.0
    hu[1, 2, 2] = peak
    labels[1, 2:2 + side, 2:2 + side] = 2
    return make_ct(hu), labels


@pytest.mark.parametrize(
    ("peak", "weight"),
    [(130.0, 1), (199.99, 1), (200.0, 2), (299.999, 2), (300.0, 3), (399.5, 3), (400.0, 4), (1500.0, 4)],
)
def test_density_weight_bands_are_half_open_on_float_hu(peak, weight):
    ct, labels = single_lesion(peak, pixels=16)  # 16 px * 0.25 mm² = 4 mm²
    result = score_volume(ct, labels)
    assert result.arteries["LAD"].agatston == pytest.approx(4.0 * weight)
    assert result.lesions[0].peak_hu == pytest.approx(peak, abs=1e-3)


def test_threshold_is_inclusive():
    hu = np.zeros((1, 6, 6), np.float32)
    labels = np.zeros_like(hu, dtype=np.uint8)
    hu[0, 1, 1:5] = [129.99, 130.0, 130.0, 500.0]
    labels[0, 1, 1:5] = 1
    result = score_volume(make_ct(hu), labels, NO_MIN)
    # 3 voxels of 0.25 mm² at or above 130 HU, peak 500 -> weight 4.
    assert result.arteries["LM"].agatston == pytest.approx(3 * 0.25 * 4)
    assert result.total.volume_mm3 == pytest.approx(3 * 0.25 * 3.0)


def test_unlabelled_calcium_and_labelled_soft_tissue_do_not_count():
    hu = np.zeros((1, 8, 8), np.float32)
    labels = np.zeros_like(hu, dtype=np.uint8)
    hu[0, 1:3, 1:3] = 600.0  # bone or aortic calcium: not labelled
    labels[0, 5:7, 5:7] = 4  # labelled but below threshold
    hu[0, 5:7, 5:7] = 100.0
    result = score_volume(make_ct(hu), labels, NO_MIN)
    assert result.total.agatston == 0.0
    assert result.total.lesions == 0
    assert result.risk_category == "0" and result.cac_drs == "A0"


def test_connectivity_four_splits_diagonal_pixels():
    hu = np.zeros((1, 6, 6), np.float32)
    labels = np.zeros_like(hu, dtype=np.uint8)
    hu[0, 1, 1] = hu[0, 2, 2] = 250.0
    labels[0, 1, 1] = labels[0, 2, 2] = 3
    eight = score_volume(make_ct(hu), labels, NO_MIN)
    four = score_volume(make_ct(hu), labels, NO_MIN.with_(connectivity=4))
    assert eight.arteries["LCX"].agatston == four.arteries["LCX"].agatston == pytest.approx(2 * 0.25 * 2)
    # With 4-connectivity each pixel is 0.25 mm², under a 0.4 mm² minimum; together they are 0.5 mm².
    assert score_volume(make_ct(hu), labels, ScoringParams(min_area_mm2=0.4)).total.agatston == pytest.approx(1.0)
    assert score_volume(make_ct(hu), labels, ScoringParams(min_area_mm2=0.4, connectivity=4)).total.agatston == 0


def test_minimum_size_in_mm2_and_pixels():
    ct, labels = single_lesion(250.0, pixels=4)  # 4 px = 1.0 mm² exactly
    assert score_volume(ct, labels, ScoringParams(min_area_mm2=1.0)).total.agatston == pytest.approx(2.0)
    assert score_volume(ct, labels, ScoringParams(min_area_mm2=1.01)).total.agatston == 0.0
    assert score_volume(ct, labels, ScoringParams(min_area_mm2=None, min_pixels=4)).total.agatston == pytest.approx(2.0)
    assert score_volume(ct, labels, ScoringParams(min_area_mm2=None, min_pixels=5)).total.agatston == 0.0
    with pytest.raises(InputError, match="not both"):
        ScoringParams(min_area_mm2=1.0, min_pixels=3)


def test_slice_normalisation_by_increment_thickness_or_none():
    hu = np.zeros((2, 6, 6), np.float32)
    labels = np.zeros_like(hu, dtype=np.uint8)
    hu[:, 1:3, 1:3] = 450.0
    labels[:, 1:3, 1:3] = 2  # 1 mm², weight 4, on 2 slices
    ct = make_ct(hu, spacing=(0.5, 0.5, 1.5), thickness=2.5)
    assert score_volume(ct, labels).total.agatston == pytest.approx(2 * 4 * 1.5 / 3)
    assert score_volume(ct, labels, ScoringParams(slice_normalization="thickness")).total.agatston == pytest.approx(2 * 4 * 2.5 / 3)
    assert score_volume(ct, labels, ScoringParams(slice_normalization="none")).total.agatston == pytest.approx(8.0)
    result = score_volume(ct, labels)
    assert result.total.volume_mm3 == pytest.approx(8 * 0.25 * 1.5)
    assert any("overlapping slices" in w for w in result.warnings)
    assert any("thickness 2.5 mm" in w for w in result.warnings)


def test_thickness_normalisation_without_thickness_is_a_clear_error():
    ct, labels = single_lesion(250.0)
    ct.info.slice_thickness_mm = None
    with pytest.raises(InputError, match="slice thickness is unknown"):
        score_volume(ct, labels, ScoringParams(slice_normalization="thickness"))


def test_arteries_touching_are_separate_lesions_and_3d_lesions_span_slices():
    hu = np.full((4, 10, 10), 300.0, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    labels[0:3, 2:4, 2:4] = 2  # one LAD lesion over three slices
    labels[0:3, 2:4, 4:6] = 3  # LCX right next to it
    labels[3, 4, 6] = 3  # diagonal in z from the LCX block: 26-connected to it
    result = score_volume(make_ct(hu), labels, NO_MIN)
    assert result.arteries["LAD"].lesions == 1
    assert result.arteries["LCX"].lesions == 1
    lad = next(lesion for lesion in result.lesions if lesion.artery == "LAD")
    assert (lad.first_slice, lad.last_slice, lad.n_slices, lad.n_voxels) == (0, 2, 3, 12)
    assert lad.agatston == pytest.approx(3 * 1.0 * 3)
    assert lad.area_mm2 == pytest.approx(3.0)
    lcx = next(lesion for lesion in result.lesions if lesion.artery == "LCX")
    assert lcx.n_voxels == 13 and lcx.n_slices == 4
    assert [lesion.id for lesion in result.lesions] == [1, 2]


def test_mass_from_calibration_regions():
    hu = np.zeros((3, 20, 20), np.float32)
    water = np.zeros(hu.shape, bool)
    ha = np.zeros(hu.shape, bool)
    hu[:, 0:4, 0:4] = 5.0
    water[:, 0:4, 0:4] = True
    hu[:, 0:4, 10:14] = 255.0
    ha[:, 0:4, 10:14] = True
    calibration = calibration_factor_from_rois(hu, water, ha, 200.0)
    assert calibration.factor_mg_cm3_per_hu == pytest.approx(200.0 / 250.0)
    assert calibration.water_hu == pytest.approx(5.0)
    labels = np.zeros(hu.shape, np.uint8)
    hu[1, 10:14, 10:14] = 405.0
    labels[1, 10:14, 10:14] = 1  # 16 voxels of 0.75 mm³ at 405 HU -> 400 HU above water
    params = ScoringParams(mass_calibration_factor=calibration.factor_mg_cm3_per_hu, mass_water_hu=calibration.water_hu)
    result = score_volume(make_ct(hu), labels, params)
    assert result.total.mass_mg == pytest.approx(0.8 * 400 * 12.0 / 1000)


def test_mass_is_not_invented_without_calibration():
    ct, labels = single_lesion(250.0)
    result = score_volume(ct, labels)
    assert result.total.mass_mg is None
    assert any("mass score not computed" in w for w in result.warnings)


def test_kvp_adapted_threshold_scales_threshold_and_bands():
    assert kvp_hu_scale(120) == 1.0
    assert kvp_hu_scale(100) == pytest.approx(0.88)
    assert kvp_hu_scale(85) == pytest.approx((0.63 + 0.88) / 2)
    with pytest.raises(InputError, match="70-120 kVp"):
        kvp_hu_scale(140)
    hu = np.zeros((1, 6, 6), np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    hu[0, 1, 1:5] = [140.0, 148.0, 200.0, 230.0]  # at 100 kVp: threshold 147.7, 230*0.88 = 202 -> weight 2
    labels[0, 1, 1:5] = 2
    ct = make_ct(hu, kvp=100.0)
    adapted = score_volume(ct, labels, ScoringParams(min_area_mm2=None, kvp_adapted_threshold=True))
    assert adapted.effective_threshold_hu == pytest.approx(130 / 0.88)
    assert adapted.total.agatston == pytest.approx(3 * 0.25 * 2)
    plain = score_volume(ct, labels, NO_MIN)
    assert plain.total.agatston == pytest.approx(4 * 0.25 * 2)
    assert any("100 kVp" in w for w in plain.warnings)


@pytest.mark.parametrize(
    ("score", "category"),
    [(0, "0"), (0.2, "1-10"), (10, "1-10"), (10.01, "11-100"), (100, "11-100"), (400, "101-400"), (400.5, ">400")],
)
def test_risk_category_boundaries(score, category):
    assert risk_category(score) == category


@pytest.mark.parametrize(
    ("score", "vessels", "grade"),
    [(0, 0, "A0"), (0.5, 1, "A1/N1"), (99.9, 2, "A1/N2"), (100, 3, "A2/N3"), (299.9, 4, "A2/N4"), (300, 4, "A3/N4")],
)
def test_cac_drs(score, vessels, grade):
    assert cac_drs(score, vessels) == grade


def test_label_map_validation():
    ct, labels = single_lesion(250.0)
    with pytest.raises(InputError, match="outside 0"):
        score_volume(ct, labels.astype(np.int16) * 3)
    with pytest.raises(InputError, match="does not match"):
        score_volume(ct, labels[:2])
    with pytest.raises(InputError, match="non-integer"):
        score_volume(ct, labels.astype(np.float32) + 0.5)


def test_presets_are_valid_and_distinct():
    assert PRESETS["standard"] == ScoringParams()
    assert len({p for p in PRESETS.values()}) == len(PRESETS)


def reference_score(hu, labels, spacing, params):
    """Straightforward per-slice, per-artery implementation with scipy.ndimage (independent of the engine)."""
    pixel_area = spacing[0] * spacing[1]
    structure_2d = ndimage.generate_binary_structure(2, 2 if params.connectivity == 8 else 1)
    min_pixels = 0 if params.min_area_mm2 is None else int(np.ceil(params.min_area_mm2 / pixel_area - 1e-9))
    totals = dict.fromkeys(ARTERIES, 0.0)
    volumes = dict.fromkeys(ARTERIES, 0.0)
    kept = np.zeros(labels.shape, np.uint8)
    for artery_id, key in enumerate(ARTERIES, start=1):
        for z in range(hu.shape[0]):
            mask = (labels[z] == artery_id) & (hu[z] >= params.threshold_hu)
            components, count = ndimage.label(mask, structure_2d)
            for c in range(1, count + 1):
                lesion = components == c
                if lesion.sum() < min_pixels:
                    continue
                peak = hu[z][lesion].max()
                weight = 1 if peak < 200 else 2 if peak < 300 else 3 if peak < 400 else 4
                totals[key] += lesion.sum() * pixel_area * weight * spacing[2] / 3.0
                volumes[key] += lesion.sum() * pixel_area * spacing[2]
                kept[z][lesion] = artery_id
    lesions_3d = {}
    for artery_id, key in enumerate(ARTERIES, start=1):
        lesions_3d[key] = ndimage.label(kept == artery_id, np.ones((3, 3, 3)))[1]
    return totals, volumes, lesions_3d


volumes = st.tuples(st.integers(1, 5), st.integers(2, 9), st.integers(2, 9)).flatmap(
    lambda shape: st.tuples(
        st.just(shape),
        st.integers(0, 2**32 - 1),
    )
)


def random_case(shape, seed):
    rng = np.random.default_rng(seed)
    hu = rng.choice([0.0, 129.5, 130.0, 199.9, 200.0, 310.0, 455.5], size=shape).astype(np.float32)
    labels = rng.choice(5, size=shape, p=[0.4, 0.15, 0.15, 0.15, 0.15]).astype(np.uint8)
    return hu, labels, rng


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volumes, st.sampled_from([4, 8]), st.sampled_from([None, 0.5, 1.0]))
def test_engine_matches_independent_reference(case, connectivity, min_area):
    shape, seed = case
    hu, labels, _ = random_case(shape, seed)
    spacing = (0.5, 0.5, 1.5)
    params = ScoringParams(connectivity=connectivity, min_area_mm2=min_area)
    result = score_volume(make_ct(hu, spacing=spacing), labels, params)
    totals, vols, lesions_3d = reference_score(hu, labels, spacing, params)
    for key in ARTERIES:
        assert result.arteries[key].agatston == pytest.approx(totals[key])
        assert result.arteries[key].volume_mm3 == pytest.approx(vols[key])
        assert result.arteries[key].lesions == lesions_3d[key]
    assert result.total.agatston == pytest.approx(sum(lesion.agatston for lesion in result.lesions))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volumes, st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=4),
       st.booleans())
def test_incremental_rescoring_equals_full_recompute(case, edits, tell_slices):
    shape, seed = case
    hu, labels, rng = random_case(shape, seed)
    ct = make_ct(hu, spacing=(0.5, 0.5, 1.5))
    params = ScoringParams(min_area_mm2=0.5, mass_calibration_factor=0.8)
    scorer = IncrementalScorer(ct, labels, params)
    edited = labels.copy()
    for z_pick, value in edits:
        z = z_pick % shape[0]
        brush = rng.random(shape[1:]) < 0.3  # a brush or eraser stroke on one slice
        edited[z][brush] = value
        changed = [z] if tell_slices else None
        incremental = scorer.update(edited.copy(), changed)
        assert incremental.to_dict() == score_volume(ct, edited, params).to_dict()


def test_update_with_no_change_keeps_result_and_rejects_bad_slices():
    ct, labels = single_lesion(250.0)
    scorer = IncrementalScorer(ct, labels)
    before = scorer.result
    assert scorer.update(labels.copy()) is before
    with pytest.raises(InputError, match="changed slice outside"):
        scorer.update(labels, [7])
    with pytest.raises(InputError, match="changed slice outside"):
        scorer.update(labels, [-1])
    edited = labels.copy()
    edited[1] = 0  # the lesion's slice: slice 1.7 must not be taken as slice 1
    for bad in (1.7, 1.0, np.float32(1), True, "1"):
        with pytest.raises(InputError, match="not a whole-number slice index"):
            scorer.update(edited, [bad])
    assert scorer.result is before and scorer.labels[1].any()
    assert scorer.update(edited, [np.int64(1)]).total.agatston == 0.0


@pytest.mark.parametrize(
    "spacing",
    [(0.5, 0.5, 0.0), (0.5, 0.5, float("nan")), (0.5, 0.5, -3.0), (0.0, 0.5, 3.0), (0.5, float("inf"), 3.0),
     (0.5, 0.5), ("abc", 0.5, 3.0)],
)
def test_a_volume_with_impossible_spacing_is_refused_where_it_is_made(spacing):
    # z = 0 would score Agatston 0, NaN "risk >400", x = 0 divide by zero: none may reach the scoring.
    hu, labels = single_lesion(250.0)[0].array, single_lesion(250.0)[1]
    with pytest.raises(InputError, match=r"spacing .*(positive finite number|not three numbers)"):
        score_volume(make_ct(hu, spacing=spacing), labels)


def test_update_slices_takes_whole_new_slices_and_refuses_unsorted_or_misshapen_ones():
    ct, labels = single_lesion(250.0)
    scorer = IncrementalScorer(ct, labels)
    z = int(np.flatnonzero(labels.any(axis=(1, 2)))[0])
    with pytest.raises(InputError, match="sorted, unique"):
        scorer.update_slices([z, z], labels[[z, z]])
    with pytest.raises(InputError, match="label slices given"):
        scorer.update_slices([z], labels[z])  # one slice without its slice axis
    assert scorer.labels[z].any()
    assert scorer.update_slices([z], np.zeros_like(labels[[z]])).total.agatston == 0.0
    assert scorer.update_slices([z], labels[[z]]).to_dict() == score_volume(ct, labels).to_dict()
