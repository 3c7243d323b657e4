"""Synthetic phantoms with known truth: a QRM-like calibration phantom and a randomised thorax phantom."""

from .calibration import (
    HA_HU_PER_MG_CM3,
    WATER_HU,
    CalibrationInsert,
    CalibrationPhantom,
    ha_density_to_hu,
    make_calibration_phantom,
    measure_inserts,
    score_calibration_phantom,
)
from .coca import coca_images, write_coca_xml
from .export import write_calibration_case, write_thorax_case
from .thorax import Calcification, ThoraxPhantom, make_thorax_phantom

__all__ = [
    "HA_HU_PER_MG_CM3",
    "WATER_HU",
    "Calcification",
    "CalibrationInsert",
    "CalibrationPhantom",
    "ThoraxPhantom",
    "coca_images",
    "ha_density_to_hu",
    "make_calibration_phantom",
    "make_thorax_phantom",
    "measure_inserts",
    "score_calibration_phantom",
    "write_calibration_case",
    "write_coca_xml",
    "write_thorax_case",
]
