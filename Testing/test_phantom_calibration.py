"""Calibration phantom (QRM cardio insert): geometry, HU model, truth table and measured scores vs physics."""

from __future__ import annotations

import pytest

from CACScoringLib.labels import LABEL_ID
from CACScoringLib.phantom import HA_HU_PER_MG_CM3, WATER_HU, make_calibration_phantom, measure_inserts
from CACScoringLib.phantom.calibration import BODY_SEMI_AXES_MM, ROD_CENTRE_X_MM, SOFT_TISSUE_HU
from CACScoringLib.scoring import calibration_factor_from_rois


def world_index(ct, x, y, z):
    """(k, j, i) voxel index nearest to world (x, y, z) mm on an identity-direction grid."""
    return tuple(
        int(round((c - o) / s)) for c, o, s in zip((z, y, x), ct.origin[::-1], ct.spacing[::-1], strict=True)
    )


@pytest.fixture(scope="module")
def sharp():
    """Noise- and blur-free phantom on 0.5 mm voxels: HU are exactly the model's away from edges."""
    return make_calibration_phantom(spacing=(0.5, 0.5, 0.5), noise_hu=0.0, blur_sigma_mm=0.0)


@pytest.fixture(scope="module", params=[0.5, 3.0], ids=["slice0.5mm", "slice3mm"])
def measured(request):
    phantom = make_calibration_phantom(spacing=(0.5, 0.5, request.param), seed=1)
    rows = {(r["density_mg_cm3"], r["diameter_mm"]): r for r in measure_inserts(phantom)}
    return request.param, rows


def test_truth_table_is_the_qrm_layout_with_hand_worked_volume_and_mass(sharp):
    assert sorted((i.density_mg_cm3, i.diameter_mm) for i in sharp.inserts) == [
        (d, s) for d in (200.0, 400.0, 800.0) for s in (1.0, 3.0, 5.0)
    ]
    by_key = {(i.density_mg_cm3, i.diameter_mm): i for i in sharp.inserts}
    # 5 mm x 5 mm cylinder: pi * 2.5² * 5 = 98.17 mm³; at 800 mg/cm³ that is 78.54 mg.
    assert by_key[(800.0, 5.0)].volume_mm3 == pytest.approx(98.17477, rel=1e-6)
    assert by_key[(800.0, 5.0)].mass_mg == pytest.approx(78.53982, rel=1e-6)
    # 3 mm at 200 mg/cm³: pi * 1.5² * 3 = 21.206 mm³ -> 4.241 mg.
    assert by_key[(200.0, 3.0)].volume_mm3 == pytest.approx(21.20575, rel=1e-6)
    assert by_key[(200.0, 3.0)].mass_mg == pytest.approx(4.24115, rel=1e-6)
    assert {i.label for i in sharp.inserts if i.density_mg_cm3 == 400.0} == {LABEL_ID["LAD"]}


def test_hu_follow_the_stated_linear_model(sharp):
    ct = sharp.ct
    for insert in sharp.inserts:
        if insert.diameter_mm == 5.0:  # centre voxel fully inside the cylinder
            assert ct.array[world_index(ct, *insert.centre_mm)] == pytest.approx(
                HA_HU_PER_MG_CM3 * insert.density_mg_cm3 + WATER_HU, abs=0.5
            )
    assert ct.array[sharp.water_mask].mean() == pytest.approx(WATER_HU, abs=0.5)
    assert ct.array[sharp.ha_mask].mean() == pytest.approx(HA_HU_PER_MG_CM3 * 200.0 + WATER_HU, abs=0.5)
    z = ct.origin[2] + ct.spacing[2] * (ct.shape[0] // 2)
    assert ct.array[world_index(ct, 0.0, BODY_SEMI_AXES_MM[1] - 3.0, z)] == SOFT_TISSUE_HU  # body shell
    assert ct.array[world_index(ct, 0.0, 0.0, z)] == WATER_HU  # insert centre
    assert ct.array[0, 0, 0] == -1000.0  # air in the corner
    # Rods sit where documented: water at -x, HA at +x.
    assert sharp.water_mask[:, :, : ct.shape[2] // 2].sum() == sharp.water_mask.sum()
    assert sharp.ha_mask[world_index(ct, ROD_CENTRE_X_MM, 0.0, z)]
    assert sharp.water_mask[world_index(ct, -ROD_CENTRE_X_MM, 0.0, z)]


@pytest.mark.parametrize("slice_mm", [0.5, 3.0])
def test_partial_volume_rendering_conserves_the_ha_mass(slice_mm):
    """Summed HU above water over an insert's ROI, times voxel volume, is rho * V whatever the blur."""
    phantom = make_calibration_phantom(spacing=(0.5, 0.5, slice_mm), noise_hu=0.0, blur_sigma_mm=0.5)
    for insert in phantom.inserts:
        roi = phantom.insert_map == insert.index
        mass = (
            (phantom.ct.array[roi] - WATER_HU).sum() * phantom.ct.voxel_volume_mm3 / HA_HU_PER_MG_CM3 / 1000
        )
        tolerance = 0.06 if insert.diameter_mm == 1.0 else 0.02  # whole-HU rounding weighs on 1 mm
        assert mass == pytest.approx(insert.mass_mg, rel=tolerance), insert


def test_calibration_factor_from_the_rods_recovers_the_hu_model():
    phantom = make_calibration_phantom(spacing=(0.5, 0.5, 3.0), noise_hu=15.0, seed=3)
    calibration = calibration_factor_from_rois(phantom.ct.array, phantom.water_mask, phantom.ha_mask, 200.0)
    assert calibration.factor_mg_cm3_per_hu == pytest.approx(1.0 / HA_HU_PER_MG_CM3, rel=0.02)
    assert calibration.water_hu == pytest.approx(WATER_HU, abs=2.0)


def test_mass_score_of_dense_inserts_is_close_to_physical_mass(measured):
    """800 mgHA/cm³: 130 HU is 16% of the contrast, so the threshold loses little of the blurred edge.

    Tolerances from the physics at 0.5 mm pixels, PSF sigma 0.5 mm, 10 HU noise (measured -8%..-16%):
    within 20% for the 3 mm insert and 12% for the 5 mm insert, at 0.5 mm and 3 mm slices.
    """
    _, rows = measured
    for diameter, tolerance in ((3.0, 0.20), (5.0, 0.12)):
        row = rows[(800.0, diameter)]
        assert row["measured_mass_mg"] == pytest.approx(row["mass_mg"], rel=tolerance), row


def test_volume_score_is_close_for_inserts_where_130_hu_is_a_third_of_the_contrast(measured):
    """400 mgHA/cm³: the 130 HU iso-surface sits near the true edge (measured +1%..+27%).

    Within 30% for 3 mm and 20% for 5 mm. Denser inserts are overestimated and fainter ones
    underestimated (tested below): the volume score depends on density by construction.
    """
    _, rows = measured
    for diameter, tolerance in ((3.0, 0.30), (5.0, 0.20)):
        row = rows[(400.0, diameter)]
        assert row["measured_volume_mm3"] == pytest.approx(row["volume_mm3"], rel=tolerance), row


def test_threshold_physics_volume_grows_with_density_mass_never_gained(measured):
    slice_mm, rows = measured
    for diameter in (3.0, 5.0):
        volumes = [rows[(d, diameter)]["measured_volume_mm3"] for d in (200.0, 400.0, 800.0)]
        assert volumes[0] < volumes[1] < volumes[2]
    for row in rows.values():
        # Thresholding drops the blurred tails, it cannot add HA (noise allowance 5%).
        assert row["measured_mass_mg"] <= row["mass_mg"] * 1.05 + 0.05, row
    # The 1 mm inserts of 200 and 400 mgHA/cm³ stay under 130 HU: the known QRM detection limit.
    assert rows[(200.0, 1.0)]["measured_agatston"] == 0.0
    assert rows[(400.0, 1.0)]["measured_agatston"] == 0.0
    # The 5 mm inserts are always found.
    assert all(rows[(d, 5.0)]["measured_agatston"] > 0 for d in (200.0, 400.0, 800.0))
