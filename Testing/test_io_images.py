"""NIfTI/NRRD CT volumes through SimpleITK: round trips keep HU and geometry, oblique directions included."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import random_ct, rotation

from CACScoringLib.errors import InputError
from CACScoringLib.io import read_ct, write_image

SUFFIXES = [".nii", ".nii.gz", ".nrrd", ".nhdr"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_hu_and_geometry(tmp_path, suffix):
    ct = random_ct()
    ct = ct.with_array(ct.array + np.float32(0.25))  # files keep float32 HU, not only integers
    path = write_image(ct, tmp_path / f"ct{suffix}")
    back = read_ct(path)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, ct.array)
    np.testing.assert_allclose(back.spacing, ct.spacing, atol=1e-5)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, ct.direction, atol=1e-6)
    assert back.info.slice_increment_mm == pytest.approx(2.5)
    assert back.info.source == str(path)
    assert back.info.kvp is None and back.info.slice_thickness_mm is None  # the scoring warns


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_oblique_direction_is_kept(tmp_path, suffix):
    oblique = rotation((1, 2, 0.5), 25.0)
    ct = random_ct(direction=tuple(oblique.ravel()))
    back = read_ct(write_image(ct, tmp_path / f"oblique{suffix}"))
    np.testing.assert_allclose(np.reshape(back.direction, (3, 3)), oblique, atol=1e-5)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-4)
    # The same voxel lands at the same physical point as in the written volume.
    index = (3, 5, 4)
    expected = ct.to_sitk().TransformIndexToPhysicalPoint(index)
    np.testing.assert_allclose(back.to_sitk().TransformIndexToPhysicalPoint(index), expected, atol=1e-4)


def test_nifti_scaling_is_applied(tmp_path):
    # Integer storage with scl_slope/scl_inter, as many converters write CT: HU come out rescaled.
    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = sitk.GetImageFromArray(stored)
    path = tmp_path / "scaled.nii"
    sitk.WriteImage(image, str(path))
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([2.0, -1024.0], dtype="<f4").tobytes()  # scl_slope, scl_inter in the header
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_ct(path).array, stored * 2.0 - 1024.0)


def test_bad_image_files(tmp_path):
    truncated = tmp_path / "cut.nii.gz"
    write_image(random_ct(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(InputError, match=r"cannot read image .*cut\.nii\.gz .*truncated or corrupt"):
        read_ct(truncated)
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.float32)), str(flat))
    with pytest.raises(InputError, match=r"flat\.nrrd is 2D; expected one 3D volume"):
        read_ct(flat)
    with pytest.raises(InputError, match=r"use a \.nii, \.nii\.gz, \.nrrd or \.nhdr file name"):
        write_image(random_ct(), tmp_path / "ct.png")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr"])
def test_a_file_cut_to_a_third_is_refused_not_read_as_zeros(tmp_path, suffix):
    path = write_image(random_ct(shape=(20, 32, 32)), tmp_path / f"ct{suffix}")
    data = path.with_suffix(".raw.gz") if suffix == ".nhdr" else path  # .nhdr keeps its voxels beside it
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    with pytest.raises(InputError, match=r"truncated"):
        read_ct(path)


def test_a_complete_gzip_of_a_short_nifti_is_refused(tmp_path):
    # The gzip stream itself is whole; the NIfTI inside lacks its last voxels.
    plain = write_image(random_ct(), tmp_path / "ct.nii")  # 6x8x10 float32 after a 352-byte header
    expected = 352 + 6 * 8 * 10 * 4
    assert plain.stat().st_size == expected
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(plain.read_bytes()[:-40]))
    with pytest.raises(InputError, match=rf"short\.nii\.gz is truncated: .*{expected} bytes .* holds {expected - 40}"):
        read_ct(short)
