"""Mass-score calibration from a water and a hydroxyapatite (HA) region of known density."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .params import ScoringParams


@dataclass(frozen=True)
class MassCalibration:
    factor_mg_cm3_per_hu: float  # mg HA/cm³ per HU above water
    water_hu: float


def calibration_factor_from_rois(
    hu: np.ndarray, water_mask: np.ndarray, ha_mask: np.ndarray, ha_density_mg_cm3: float
) -> MassCalibration:
    """c = rho_HA / (mean HU_HA - mean HU_water), so that mass = c * (HU - HU_water) * volume."""
    if not water_mask.any() or not ha_mask.any():
        raise InputError("mass calibration needs non-empty water and hydroxyapatite regions")
    water_hu = float(hu[water_mask.astype(bool)].mean())
    ha_hu = float(hu[ha_mask.astype(bool)].mean())
    if ha_hu - water_hu <= 1.0:
        raise InputError(
            f"calibration rod ({ha_hu:.1f} HU) is not denser than water ({water_hu:.1f} HU): "
            "check the calibration regions"
        )
    return MassCalibration(float(ha_density_mg_cm3) / (ha_hu - water_hu), water_hu)


def calibrated_params(
    hu: np.ndarray,
    water_mask: np.ndarray,
    ha_mask: np.ndarray,
    ha_density_mg_cm3: float,
    params: ScoringParams | None = None,
) -> tuple[MassCalibration, ScoringParams]:
    """The calibration measured from the two regions, and `params` (default: standard) that apply it."""
    calibration = calibration_factor_from_rois(hu, water_mask, ha_mask, ha_density_mg_cm3)
    params = (params or ScoringParams()).with_(
        mass_calibration_factor=calibration.factor_mg_cm3_per_hu, mass_water_hu=calibration.water_hu
    )
    return calibration, params
