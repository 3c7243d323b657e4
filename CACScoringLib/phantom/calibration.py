"""Calibration phantom after the QRM cardio calcification insert (QRM-Thorax with cardio insert).

Layout (mm, in-plane centre at 0): an elliptical soft-tissue body (40 HU, semi-axes 62 x 52 mm) in air
holds a water-equivalent cylindrical insert (0 HU, radius 40 mm) with nine hydroxyapatite (HA) cylinders
along z: densities 200, 400 and 800 mgHA/cm³ (one row each, 120° apart) and diameters 1, 3 and 5 mm with
length equal to diameter, all centred on one z. Two calibration rods (radius 5 mm, full length) sit in the
body beside the insert: water (0 HU) on the right and 200 mgHA/cm³ on the left.

HU follow the linear model HU = HA_HU_PER_MG_CM3 * rho_HA + WATER_HU (`ha_density_to_hu`); the slope is an
assumed round figure of the order seen at 120 kVp, the true slope is scanner-specific, which is why mass
scoring measures its calibration factor from the rods instead of assuming it.

Labels for scoring: each insert's region of interest (the cylinder grown by `ROI_MARGIN_MM` in-plane and
one slice in z) carries the label of its density row: 200 -> LM, 400 -> LAD, 800 -> LCX, so per-artery
scores read as per-density scores. `insert_map` numbers the inserts 1-9 (`inserts[i - 1]`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..labels import LABEL_ID
from ..scoring import ScoreResult, ScoringParams, calibrated_params, score_volume
from ..volume import CTVolume, ScanInfo
from . import render

HA_HU_PER_MG_CM3 = 1.0  # HU per mgHA/cm³ above water (model assumption, see module docstring)
WATER_HU = 0.0
SOFT_TISSUE_HU = 40.0
AIR_HU = -1000.0

INSERT_DENSITIES_MG_CM3 = (200.0, 400.0, 800.0)
INSERT_DIAMETERS_MM = (1.0, 3.0, 5.0)
DENSITY_ROW_LABEL = {200.0: LABEL_ID["LM"], 400.0: LABEL_ID["LAD"], 800.0: LABEL_ID["LCX"]}
CALIBRATION_ROD_DENSITY_MG_CM3 = 200.0

BODY_SEMI_AXES_MM = (62.0, 52.0)
INSERT_RADIUS_MM = 40.0
ROD_RADIUS_MM = 5.0
ROD_CENTRE_X_MM = 51.0  # water rod at -x (patient right), HA rod at +x (patient left)
RING_RADII_MM = (10.0, 20.0, 31.0)  # distance of the 1, 3, 5 mm inserts from the insert centre
ROI_MARGIN_MM = 2.0  # insert ROI = cylinder grown by this in-plane (covers blur) and one slice in z
ROD_ROI_EROSION_MM = 1.5  # calibration ROIs stay this far inside the rods (no partial volume)


def ha_density_to_hu(density_mg_cm3):
    """HU of hydroxyapatite of the given density (mg/cm³) in this phantom's linear model."""
    return HA_HU_PER_MG_CM3 * np.asarray(density_mg_cm3, dtype=np.float64) + WATER_HU


@dataclass(frozen=True)
class CalibrationInsert:
    index: int  # 1-9, the value in CalibrationPhantom.insert_map
    density_mg_cm3: float
    diameter_mm: float
    length_mm: float
    centre_mm: tuple[float, float, float]  # (x, y, z)
    label: int  # artery label the insert's ROI carries (its density row)
    hu: float  # nominal HU of the material

    @property
    def volume_mm3(self) -> float:
        """Physical volume pi r² L."""
        return math.pi * (self.diameter_mm / 2) ** 2 * self.length_mm

    @property
    def mass_mg(self) -> float:
        """Physical HA mass rho V (mg/cm³ x mm³ / 1000)."""
        return self.density_mg_cm3 * self.volume_mm3 / 1000.0

    def to_dict(self) -> dict:
        return {**asdict(self), "volume_mm3": self.volume_mm3, "mass_mg": self.mass_mg}


@dataclass
class CalibrationPhantom:
    ct: CTVolume
    labels: np.ndarray  # uint8 (z, y, x): insert ROIs labelled by density row
    insert_map: np.ndarray  # uint8 (z, y, x): insert ROIs numbered 1-9
    water_mask: np.ndarray  # bool: inside the water calibration rod
    ha_mask: np.ndarray  # bool: inside the 200 mgHA/cm³ calibration rod
    inserts: list[CalibrationInsert]
    ha_density_mg_cm3: float = CALIBRATION_ROD_DENSITY_MG_CM3

    def truth(self) -> dict:
        return {
            "hu_model": {"ha_hu_per_mg_cm3": HA_HU_PER_MG_CM3, "water_hu": WATER_HU},
            "calibration_rod_density_mg_cm3": self.ha_density_mg_cm3,
            "density_row_labels": {str(k): v for k, v in DENSITY_ROW_LABEL.items()},
            "inserts": [insert.to_dict() for insert in self.inserts],
        }


def _add_fraction(image, shape_fraction, value_hu):
    """Paint a rendered shape (box, fraction) with value_hu over what is there, weighted by the fraction."""
    box, fraction = shape_fraction
    region = image[box]
    region += fraction * (np.float32(value_hu) - region)


def make_calibration_phantom(
    spacing=(0.5, 0.5, 3.0),
    length_mm: float = 30.0,
    field_of_view_mm=(130.0, 110.0),
    z_offset_mm: float = 0.0,
    blur_sigma_mm: float = 0.5,
    noise_hu: float = 10.0,
    supersample: int = 5,
    seed: int = 0,
) -> CalibrationPhantom:
    """Render the calibration phantom on a grid of `spacing` (x, y, z) mm.

    The inserts are centred on the middle slice's centre plus `z_offset_mm` (to study slice partial
    volume). `blur_sigma_mm` is the Gaussian PSF sigma, `noise_hu` the noise standard deviation.
    """
    spacing = tuple(float(s) for s in spacing)
    shape = (
        max(int(round(length_mm / spacing[2])), 3),
        int(round(field_of_view_mm[1] / spacing[1])),
        int(round(field_of_view_mm[0] / spacing[0])),
    )
    grid = render.Grid.centred(shape, spacing)
    xs, ys, zs = grid.axis(0), grid.axis(1), grid.axis(2)
    z_centre = float(zs[shape[0] // 2] + z_offset_mm)
    full_length = shape[0] * spacing[2] + 2 * spacing[2]

    # In-plane structures that run the whole length: render one supersampled slice and repeat it.
    _, ys_sub, xs_sub = grid.box_coordinates(
        (slice(0, 1), slice(0, shape[1]), slice(0, shape[2])), supersample
    )
    x2, y2 = xs_sub[None, :], ys_sub[:, None]

    def in_plane_fraction(inside):
        return render.block_mean(inside.astype(np.float32), supersample)

    slice_image = np.full(shape[1:], AIR_HU, dtype=np.float32)
    body = in_plane_fraction((x2 / BODY_SEMI_AXES_MM[0]) ** 2 + (y2 / BODY_SEMI_AXES_MM[1]) ** 2 <= 1.0)
    slice_image += body * (SOFT_TISSUE_HU - slice_image)
    insert = in_plane_fraction(x2**2 + y2**2 <= INSERT_RADIUS_MM**2)
    slice_image += insert * (WATER_HU - slice_image)
    image = np.repeat(slice_image[None], shape[0], axis=0)

    rods = {"water": (-ROD_CENTRE_X_MM, WATER_HU), "ha": (ROD_CENTRE_X_MM, float(ha_density_to_hu(200.0)))}
    rod_masks = {}
    for name, (x_centre, hu) in rods.items():
        rod = render.cylinder_fraction(grid, (x_centre, 0.0, 0.0), ROD_RADIUS_MM, full_length, supersample)
        _add_fraction(image, rod, hu)
        inner = (xs[None, :] - x_centre) ** 2 + ys[:, None] ** 2 <= (ROD_RADIUS_MM - ROD_ROI_EROSION_MM) ** 2
        mask = np.repeat(inner[None], shape[0], axis=0)
        mask[[0, -1]] = False  # end slices see the blur's edge handling
        rod_masks[name] = mask

    labels = np.zeros(shape, dtype=np.uint8)
    insert_map = np.zeros(shape, dtype=np.uint8)
    inserts = []
    for row, density in enumerate(INSERT_DENSITIES_MG_CM3):
        angle = math.radians(90.0 + 120.0 * row)
        for diameter, ring_radius in zip(INSERT_DIAMETERS_MM, RING_RADII_MM, strict=True):
            centre = (ring_radius * math.cos(angle), ring_radius * math.sin(angle), z_centre)
            hu = float(ha_density_to_hu(density))
            cylinder = render.cylinder_fraction(grid, centre, diameter / 2, diameter, supersample)
            _add_fraction(image, cylinder, hu)
            info = CalibrationInsert(
                index=len(inserts) + 1,
                density_mg_cm3=density,
                diameter_mm=diameter,
                length_mm=diameter,
                centre_mm=tuple(float(c) for c in centre),
                label=DENSITY_ROW_LABEL[density],
                hu=hu,
            )
            inserts.append(info)
            roi_radius = diameter / 2 + ROI_MARGIN_MM
            roi_half_length = diameter / 2 + spacing[2]
            in_disk = (xs[None, :] - centre[0]) ** 2 + (ys[:, None] - centre[1]) ** 2 <= roi_radius**2
            in_length = np.abs(zs - centre[2]) <= roi_half_length
            roi = in_length[:, None, None] & in_disk[None]
            labels[roi] = info.label
            insert_map[roi] = info.index

    image = render.blur(image, grid, blur_sigma_mm)
    render.add_noise(image, noise_hu, np.random.default_rng(seed))
    np.rint(image, out=image)  # whole HU, as scanners store them
    info = ScanInfo(
        slice_thickness_mm=spacing[2],
        slice_increment_mm=spacing[2],
        kvp=120.0,
        manufacturer="CACScoring phantom",
        modality="CT",
        patient_id=f"PHANTOM-CALIBRATION-{seed:04d}",
        source=f"phantom:calibration seed={seed}",
    )
    ct = CTVolume(
        array=image.astype(np.float32, copy=False), spacing=grid.spacing, origin=grid.origin, info=info
    )
    return CalibrationPhantom(
        ct=ct,
        labels=labels,
        insert_map=insert_map,
        water_mask=rod_masks["water"],
        ha_mask=rod_masks["ha"],
        inserts=inserts,
    )


def score_calibration_phantom(
    phantom: CalibrationPhantom, params: ScoringParams | None = None
) -> ScoreResult:
    """Scores of all inserts with the mass calibration factor measured from the water and HA rods."""
    _, params = calibrated_params(
        phantom.ct.array, phantom.water_mask, phantom.ha_mask, phantom.ha_density_mg_cm3, params
    )
    return score_volume(phantom.ct, phantom.labels, params)


def measure_inserts(phantom: CalibrationPhantom, params: ScoringParams | None = None) -> list[dict]:
    """Per insert: physical volume and mass next to the volume and calibrated mass scores of its ROI."""
    calibration, params = calibrated_params(
        phantom.ct.array, phantom.water_mask, phantom.ha_mask, phantom.ha_density_mg_cm3, params
    )
    rows = []
    for insert in phantom.inserts:
        labels = np.where(phantom.insert_map == insert.index, insert.label, 0).astype(np.uint8)
        result = score_volume(phantom.ct, labels, params)
        rows.append(
            {
                **insert.to_dict(),
                "measured_volume_mm3": result.total.volume_mm3,
                "measured_mass_mg": result.total.mass_mg,
                "measured_agatston": result.total.agatston,
                "calibration_factor_mg_cm3_per_hu": calibration.factor_mg_cm3_per_hu,
            }
        )
    return rows
