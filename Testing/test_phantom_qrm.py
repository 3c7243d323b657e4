"""QRM insert finding on a rendered QRM-CCI with known geometry: any rotation or mirroring, exact truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from CACScoringLib.errors import InputError
from CACScoringLib.phantom import render
from CACScoringLib.phantom.qrm import locate_qrm_inserts, score_qrm_inserts
from CACScoringLib.volume import CTVolume, ScanInfo

WATER_HU, MATRIX_HU, AIR_HU = 30.0, 75.0, -1000.0
FACTOR = 0.75  # mg HA/cm³ per HU above water: HU = WATER_HU + density / FACTOR
RINGS_MM = {"small": 12.5, "medium": 25.0, "large": 37.5}
DIAMETERS_MM = {"small": 1.0, "medium": 3.0, "large": 5.0}
ROD_RADIUS_MM = 10.0
HA_ROD_XY, WATER_ROD_XY = (3.0, -2.0), (-15.0, 20.0)
SPACING = (0.5, 0.5, 1.0)
PLANE_Z_MM = -6.0  # inserts here; both rods run from 4 mm to the end of the scan


def _paint(image, shape_fraction, hu):
    box, fraction = shape_fraction
    image[box] += fraction * (np.float32(hu) - image[box])


def render_cci(rotation_deg: float, ray_densities, water_rod_hu: float = WATER_HU, seed: int = 0):
    """A 100 mm CCI in air: nine HA cylinders on three rays at rotation_deg + 0/120/240°, two rods."""
    grid = render.Grid.centred((30, 240, 240), SPACING)
    x, y = grid.axis(0)[None, :], grid.axis(1)[:, None]
    image = np.where(x**2 + y**2 <= 50.0**2, MATRIX_HU, AIR_HU).astype(np.float32)
    image = np.repeat(image[None], grid.shape[0], axis=0)
    truth = {}
    for ray, density in enumerate(ray_densities):
        angle = math.radians(rotation_deg + 120.0 * ray)
        for size, ring in RINGS_MM.items():
            centre = (ring * math.cos(angle), ring * math.sin(angle), PLANE_Z_MM)
            cylinder = render.cylinder_fraction(grid, centre, DIAMETERS_MM[size] / 2, DIAMETERS_MM[size])
            _paint(image, cylinder, WATER_HU + density / FACTOR)
            truth[(float(density), size)] = centre[:2]
    z_top = grid.axis(2)[-1] + SPACING[2]
    for (rx, ry), hu in ((HA_ROD_XY, WATER_HU + 200.0 / FACTOR), (WATER_ROD_XY, water_rod_hu)):
        length = z_top - 4.0
        _paint(image, render.cylinder_fraction(grid, (rx, ry, 4.0 + length / 2), ROD_RADIUS_MM, length), hu)
    image = render.blur(image, grid, 0.5)
    render.add_noise(image, 5.0, np.random.default_rng(seed))
    info = ScanInfo(slice_thickness_mm=SPACING[2], slice_increment_mm=SPACING[2], kvp=120.0)
    return CTVolume(array=image, spacing=grid.spacing, origin=grid.origin, info=info), truth


def _world_xy(ct, centre_zyx):
    return (ct.origin[0] + centre_zyx[2] * ct.spacing[0], ct.origin[1] + centre_zyx[1] * ct.spacing[1])


@pytest.mark.parametrize(
    "rotation_deg, ray_densities",
    [(0.0, (200, 400, 800)), (37.0, (800, 400, 200))],
    ids=["upright", "rotated-mirrored"],
)
def test_inserts_rods_and_calibration_are_found_where_they_were_drawn(rotation_deg, ray_densities):
    ct, truth = render_cci(rotation_deg, ray_densities)
    layout = locate_qrm_inserts(ct)
    assert layout.ring_radius_mm == pytest.approx(RINGS_MM["large"], abs=0.3)
    assert {(i.density_mg_cm3, i.size) for i in layout.inserts} == set(truth)
    for insert in layout.inserts:
        found = _world_xy(ct, insert.centre_zyx)
        drawn = truth[(insert.density_mg_cm3, insert.size)]
        assert math.dist(found, drawn) <= 0.5, (insert, drawn)
        plane_z = ct.origin[2] + insert.centre_zyx[0] * ct.spacing[2]
        assert plane_z == pytest.approx(PLANE_Z_MM, abs=0.5)
    assert {i.size for i in layout.inserts if i.located} >= {"medium", "large"}

    # Calibration ROIs lie inside the rods they stand for, and give back the drawn HU model.
    for mask, (rx, ry) in ((layout.rod_mask, HA_ROD_XY), (layout.water_mask, WATER_ROD_XY)):
        z, yy, xx = np.nonzero(mask)
        x_mm, y_mm = ct.origin[0] + xx * ct.spacing[0], ct.origin[1] + yy * ct.spacing[1]
        assert np.hypot(x_mm - rx, y_mm - ry).max() <= ROD_RADIUS_MM - 0.5  # clear of the rod's edge
        assert math.dist((x_mm.mean(), y_mm.mean()), (rx, ry)) <= 1.0
        assert (ct.origin[2] + z * ct.spacing[2]).min() >= 4.0
    calibration, rows = score_qrm_inserts(ct, layout)
    assert calibration.factor_mg_cm3_per_hu == pytest.approx(FACTOR, rel=0.02)
    assert calibration.water_hu == pytest.approx(WATER_HU, abs=1.0)
    large_800 = next(r for r in rows if r["size"] == "large" and r["density_mg_cm3"] == 800.0)
    assert large_800["detected"] and large_800["agatston"] > 0


def test_a_water_rod_as_dense_as_the_insert_is_refused():
    ct, _ = render_cci(0.0, (200, 400, 800), water_rod_hu=MATRIX_HU)
    with pytest.raises(InputError, match="no water rod found beside the calibration rod"):
        locate_qrm_inserts(ct)
