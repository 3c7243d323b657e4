"""Bad CT input: each case raises one InputError line that names the problem (and the CLI exits 2 with it)."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from io_helpers import dicom_files, edit_slices, random_ct, rotation
from pydicom.dataset import Dataset, FileMetaDataset

from CACScoringLib.errors import InputError
from CACScoringLib.io import list_series, read_ct, write_dicom_series


def series(tmp_path, **kwargs):
    folder = tmp_path / "series"
    ct = random_ct(**{"shape": (5, 4, 4), "origin": (0.0, 0.0, 0.0), **kwargs})
    write_dicom_series(ct, folder)
    return folder


def reason(path) -> str:
    with pytest.raises(InputError) as raised:
        read_ct(path)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path):
    assert reason(tmp_path / "nowhere") == f"{tmp_path / 'nowhere'} does not exist; give a DICOM folder, .nii, .nii.gz, .nrrd or .nhdr"


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "inner").mkdir(parents=True)
    assert "is empty" in reason(tmp_path / "empty")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "b.bin").write_bytes(bytes(range(256)) * 4)
    assert reason(tmp_path).startswith(f"no DICOM files in {tmp_path} (2 file(s) checked")


def test_unknown_file_type(tmp_path):
    path = tmp_path / "scan.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    assert "is not a DICOM or image file" in reason(path)


def write_structured_report(path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_without_images(tmp_path):
    write_structured_report(tmp_path / "report.dcm")
    assert "holds 1 DICOM file(s) but no image (found: SR)" in reason(tmp_path)


def test_non_image_dicom_beside_a_series_is_skipped(tmp_path):
    folder = series(tmp_path)
    write_structured_report(folder / "report.dcm")
    assert read_ct(folder).shape == (5, 4, 4)


def test_image_without_pixel_data_names_the_file(tmp_path):
    folder = series(tmp_path)
    broken = dicom_files(folder)[2]
    ds = pydicom.dcmread(broken)
    del ds.PixelData
    ds.save_as(broken)
    assert reason(folder) == (
        f"{broken} is a truncated or corrupt DICOM file (CT Image Storage without PixelData); "
        "remove or replace it and try again"
    )


def test_non_ct_modality(tmp_path):
    folder = series(tmp_path)
    edit_slices(folder, lambda i, ds: setattr(ds, "Modality", "MR"))
    assert "is modality MR, not CT" in reason(folder)


@pytest.mark.parametrize("keep_bytes", [300, 700])
def test_truncated_header_names_the_file(tmp_path, keep_bytes):
    folder = series(tmp_path)
    broken = dicom_files(folder)[1]
    broken.write_bytes(broken.read_bytes()[:keep_bytes])
    message = reason(folder)
    assert message.startswith(f"{broken} is a truncated or corrupt DICOM file")


def test_truncated_pixel_data_names_the_file(tmp_path):
    folder = series(tmp_path)
    broken = dicom_files(folder)[3]
    broken.write_bytes(broken.read_bytes()[:-10])
    message = reason(folder)
    assert message.startswith(f"cannot read the pixel data of {broken}")
    assert "truncated" in message


def test_missing_slice_names_the_positions(tmp_path):
    folder = series(tmp_path)  # z = 0, 2.5, 5, 7.5, 10
    dicom_files(folder)[2].unlink()
    assert "between slice positions 2.50 to 7.50 mm (5.00 mm), where the usual increment is 2.50 mm" in reason(folder)


def test_missing_slice_in_a_short_series_is_found(tmp_path):
    folder = series(tmp_path, shape=(4, 4, 4))  # z = 0, 2.5, 5, 7.5; steps after removal 5.0, 2.5
    dicom_files(folder)[1].unlink()
    assert "missing slices or irregular slice spacing: between slice positions 0.00 to 5.00 mm" in reason(folder)


def test_irregular_spacing(tmp_path):
    folder = series(tmp_path, shape=(6, 4, 4))
    edit_slices(folder, lambda i, ds: setattr(ds, "ImagePositionPatient", [0, 0, 2.5 * i + (1.5 if i == 3 else 0)]))
    message = reason(folder)
    assert "5.00 to 9.00 mm (4.00 mm)" in message and "9.00 to 10.00 mm (1.00 mm)" in message


def test_duplicate_positions(tmp_path):
    folder = series(tmp_path)
    copy = folder / "copy.dcm"
    shutil.copy(dicom_files(folder)[1], copy)
    ds = pydicom.dcmread(copy)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(copy)
    assert "2 slices share a position, e.g. 2.500 mm" in reason(folder)


def test_gantry_tilt_in_orientation(tmp_path):
    folder = series(tmp_path, direction=tuple(rotation((1, 0, 0), 12.0).ravel()))
    assert "not axial (slice normal 12.0 degrees from the patient z axis" in reason(folder)


def test_gantry_tilt_as_sheared_positions(tmp_path):
    folder = series(tmp_path)
    tan = np.tan(np.radians(10.0))
    edit_slices(folder, lambda i, ds: setattr(ds, "ImagePositionPatient", [0, 2.5 * i * tan, 2.5 * i]))
    assert "sheared by 10.0 degrees" in reason(folder)


def test_sagittal_series(tmp_path):
    sagittal = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # rows along y, columns along -z
    folder = series(tmp_path, direction=tuple(sagittal.ravel()))
    assert "reformat the series to axial slices" in reason(folder)


def test_mixed_matrix_sizes(tmp_path):
    folder = tmp_path / "mixed"
    uid = write_dicom_series(random_ct(shape=(3, 6, 6), origin=(0.0, 0.0, 0.0)), folder)
    write_dicom_series(random_ct(shape=(2, 4, 4), origin=(0.0, 0.0, 7.5)), folder / "more", series_uid=uid)
    assert "mixes matrix sizes: 6x6 (3 slices), 4x4 (2 slices)" in reason(folder)


def test_multiframe_is_refused(tmp_path):
    folder = series(tmp_path, shape=(1, 4, 4))
    edit_slices(folder, lambda i, ds: setattr(ds, "NumberOfFrames", 3))
    assert "multi-frame (enhanced) image with 3 frames" in reason(folder)


def test_writer_refuses_volumes_dicom_cannot_hold(tmp_path):
    ct = random_ct(shape=(2, 3, 3))
    with pytest.raises(InputError, match="NaN or infinite"):
        write_dicom_series(ct.with_array(np.full(ct.shape, np.nan, np.float32)), tmp_path / "nan")
    skewed = (1.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    with pytest.raises(InputError, match="not orthonormal"):
        write_dicom_series(random_ct(direction=skewed), tmp_path / "skewed")
    assert not (tmp_path / "nan").exists() and not (tmp_path / "skewed").exists()


def test_list_series_errors_too(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_series(tmp_path / "nowhere")


def test_cli_prints_the_error_and_exits_2(tmp_path, capsys):
    from CACScoringLib import cli

    folder = series(tmp_path)
    dicom_files(folder)[2].unlink()
    assert cli.main(["score", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cacscoring: error: missing slices or irregular slice spacing")
