"""Write phantoms to disk: NIfTI and/or DICOM series, COCA-style calcium XML, and truth.json.

File names per case folder (`prefix` is "thorax" or "calibration"):
  <prefix>_ct.nii.gz, <prefix>_labels.nii.gz       NIfTI (format "nifti" or "both")
  <prefix>_dicom/                                  one DICOM file per slice (format "dicom" or "both")
  <prefix>_coca.xml                                COCA-style calcium XML of the labels (coca_xml=True)
  thorax_distractors.nii.gz                        thorax with distractors: their kind ids (truth.json distractor_kinds)
  calibration_rois.nii.gz, calibration_inserts.nii.gz   calibration only: rods (1 water, 2 HA), inserts 1-9
  truth.json                                       generator settings, ground truth and the implied scores
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from ..errors import InputError
from ..io import write_dicom_series, write_image, write_labels
from ..volume import CTVolume
from .calibration import CalibrationPhantom, measure_inserts, score_calibration_phantom
from .coca import write_coca_xml
from .thorax import ThoraxPhantom

FORMATS = ("nifti", "dicom", "both")


def _write_ct_and_labels(
    ct: CTVolume, labels: np.ndarray, folder: Path, prefix: str, fmt: str, uid_seed: str
):
    if fmt not in FORMATS:
        raise InputError(f"unknown output format {fmt!r}: choose one of {', '.join(FORMATS)}")
    files = {}
    if fmt in ("nifti", "both"):
        files["ct"] = write_image(ct, folder / f"{prefix}_ct.nii.gz")
        files["labels"] = write_labels(labels, ct, folder / f"{prefix}_labels.nii.gz")
    if fmt in ("dicom", "both"):
        dicom_folder = folder / f"{prefix}_dicom"
        if dicom_folder.exists() and any(dicom_folder.iterdir()):
            raise InputError(f"{dicom_folder} is not empty; write the phantom into a new folder")
        if fmt == "dicom":  # the labels still need a file next to a DICOM-only export
            files["labels"] = write_labels(labels, ct, folder / f"{prefix}_labels.nii.gz")
        # UIDs derived from the seed: rewriting a case gives the same series identity.
        write_dicom_series(
            ct,
            dicom_folder,
            series_description=f"CACScoring {prefix} phantom",
            kvp=ct.info.kvp,
            slice_thickness=ct.info.slice_thickness_mm,  # overlapping slices: thicker than their spacing
            patient_id=ct.info.patient_id or "PHANTOM",
            study_uid=generate_uid(entropy_srcs=[uid_seed, "study"]),
            series_uid=generate_uid(entropy_srcs=[uid_seed, "series"]),
        )
        files["dicom"] = dicom_folder
    return files


def _write_truth(truth: dict, files: dict, folder: Path) -> Path:
    truth = {**truth, "files": {key: str(Path(path).relative_to(folder)) for key, path in files.items()}}
    path = folder / "truth.json"
    path.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return path


def write_thorax_case(
    phantom: ThoraxPhantom, folder: str | Path, fmt: str = "nifti", coca_xml: bool = False
) -> dict:
    """Write one thorax phantom into `folder`; returns {what: path}, truth.json included."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = _write_ct_and_labels(phantom.ct, phantom.labels, folder, "thorax", fmt, f"thorax-{phantom.seed}")
    if coca_xml:
        files["coca_xml"] = write_coca_xml(phantom.ct, phantom.labels, folder / "thorax_coca.xml")
    if phantom.distractor_map is not None:
        kinds = phantom.ct.with_array(phantom.distractor_map.astype(np.float32))
        files["distractors"] = write_image(kinds, folder / "thorax_distractors.nii.gz")
    files["truth"] = _write_truth(phantom.truth(), files, folder)
    return files


def write_calibration_case(
    phantom: CalibrationPhantom, folder: str | Path, fmt: str = "nifti", coca_xml: bool = False, seed: int = 0
) -> dict:
    """Write one calibration phantom into `folder`; returns {what: path}, truth.json included."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = _write_ct_and_labels(
        phantom.ct, phantom.labels, folder, "calibration", fmt, f"calibration-{seed}"
    )
    rois = np.zeros(phantom.ct.shape, dtype=np.uint8)
    rois[phantom.water_mask] = 1
    rois[phantom.ha_mask] = 2
    files["calibration_rois"] = write_labels(rois, phantom.ct, folder / "calibration_rois.nii.gz")
    inserts = phantom.ct.with_array(phantom.insert_map.astype(np.float32))
    files["calibration_inserts"] = write_image(inserts, folder / "calibration_inserts.nii.gz")
    if coca_xml:
        files["coca_xml"] = write_coca_xml(phantom.ct, phantom.labels, folder / "calibration_coca.xml")
    truth = {
        "kind": "calibration",
        "seed": seed,
        "shape_zyx": list(phantom.ct.shape),
        "spacing_xyz_mm": list(phantom.ct.spacing),
        **phantom.truth(),
        "inserts": measure_inserts(phantom),
        "scores": score_calibration_phantom(phantom).to_dict(),
    }
    files["truth"] = _write_truth(truth, files, folder)
    return files
