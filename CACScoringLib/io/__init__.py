"""CT input/output: DICOM series (pydicom), NIfTI/NRRD (SimpleITK), label maps, DICOM series writing."""

from .dicom import SeriesSummary, list_series
from .dicom_writer import write_dicom_series
from .images import read_ct, write_image
from .labels import read_labels, write_labels

__all__ = [
    "SeriesSummary",
    "list_series",
    "read_ct",
    "read_labels",
    "write_dicom_series",
    "write_image",
    "write_labels",
]
