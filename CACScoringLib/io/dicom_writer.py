"""Write a CTVolume as a single-frame CT Image Storage DICOM series (phantoms, tests, exports)."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from ..errors import InputError
from ..volume import CTVolume

MANUFACTURER = "CACScoring phantom"
# Stored value = HU - intercept in signed 16 bits: covers -33792..31743 HU, far beyond CT's range.
RESCALE_INTERCEPT = -1024.0
_INT16 = np.iinfo(np.int16)


def _ds(value: float) -> str:
    """A decimal string that fits DICOM's 16-character DS limit."""
    return format_number_as_ds(float(value))


def _frame(ct: CTVolume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and slice step direction from the SimpleITK direction matrix."""
    direction = np.asarray(ct.direction, dtype=float).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError("the volume's direction matrix is not orthonormal; resample it before writing DICOM")
    return direction[:, 0], direction[:, 1], direction[:, 2]


def write_dicom_series(
    ct: CTVolume,
    folder: str | Path,
    series_description: str = "CACScoring phantom",
    kvp: float | None = 120.0,
    slice_thickness: float | None = None,
    patient_id: str = "PHANTOM",
    patient_name: str = "CACScoring^Phantom",
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
) -> str:
    """Write `ct` as one DICOM file per slice into `folder` (created if missing) and return the SeriesInstanceUID.

    Pixel data are signed int16 with RescaleSlope 1 and RescaleIntercept -1024, so HU are kept to the
    nearest integer. `slice_thickness` defaults to the slice increment; `kvp=None` leaves KVP out.
    File names carry the end of the series UID, so several series can share a folder. A left-handed
    direction matrix cannot be expressed in DICOM (the slice normal is always row x column): such a
    volume reads back as the equivalent right-handed one, flipped along z.
    """
    array = np.asarray(ct.array)
    if array.ndim != 3:
        raise InputError(f"write_dicom_series needs a 3D volume, got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError("the volume holds NaN or infinite values; replace them (e.g. by -1024 HU) before writing DICOM")
    row_cosine, column_cosine, slice_direction = _frame(ct)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = generate_uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    spacing_x, spacing_y, spacing_z = (float(s) for s in ct.spacing)
    thickness = spacing_z if slice_thickness is None else float(slice_thickness)
    normal = np.cross(row_cosine, column_cosine)
    stored = np.clip(np.rint(array - RESCALE_INTERCEPT), _INT16.min, _INT16.max).astype("<i2")
    name_stem = series_uid.replace(".", "")[-10:]

    for index in range(array.shape[0]):
        position = np.asarray(ct.origin, dtype=float) + index * spacing_z * slice_direction
        sop_instance_uid = generate_uid()

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_instance_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_instance_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = MANUFACTURER
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.BodyPartExamined = "HEART"
        ds.SliceThickness = _ds(thickness)
        if kvp is not None:
            ds.KVP = _ds(kvp)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = int(series_number)
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [_ds(p) for p in position]
        ds.ImageOrientationPatient = [_ds(c) for c in (*row_cosine, *column_cosine)]
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(position @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
        ds.PixelSpacing = [_ds(spacing_y), _ds(spacing_x)]  # (between rows, between columns)
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = _ds(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored[index].tobytes()
        ds.save_as(folder / f"CT{name_stem}_{index + 1:04d}.dcm", enforce_file_format=True)
    return series_uid
