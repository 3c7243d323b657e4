"""Label maps on the CT grid: writing, reading, and the geometry and value checks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import random_ct

from CACScoringLib.errors import InputError
from CACScoringLib.io import read_ct, read_labels, write_dicom_series, write_image, write_labels
from CACScoringLib.labels import ARTERY_BY_ID


def labels_for(ct, seed=0):
    return np.random.default_rng(seed).integers(0, max(ARTERY_BY_ID) + 1, size=ct.shape).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_labels_round_trip_on_a_dicom_ct(tmp_path, suffix):
    write_dicom_series(random_ct(), tmp_path / "dcm")
    ct = read_ct(tmp_path / "dcm")
    labels = labels_for(ct)
    path = write_labels(labels, ct, tmp_path / f"labels{suffix}")
    back = read_labels(path, ct)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8


def test_float_labels_with_whole_values_are_accepted(tmp_path):
    ct = random_ct()
    labels = labels_for(ct)
    path = tmp_path / "float_labels.nii.gz"
    sitk.WriteImage(ct.to_sitk(labels.astype(np.float32)), str(path))
    np.testing.assert_array_equal(read_labels(path, ct), labels)


def test_values_outside_the_table_are_listed(tmp_path):
    ct = random_ct()
    labels = labels_for(ct).astype(np.int16)
    labels[0, 0, :3] = [5, 255, -1]
    path = tmp_path / "bad.nrrd"
    sitk.WriteImage(ct.to_sitk(labels), str(path))
    with pytest.raises(InputError, match=r"holds values outside 0\.\.4: -1, 5, 255; relabel it to 0 background, 1 LM"):
        read_labels(path, ct)
    with pytest.raises(InputError, match=r"values outside 0\.\.4: -1, 5, 255"):
        write_labels(labels, ct, tmp_path / "never.nrrd")
    assert not (tmp_path / "never.nrrd").exists()


def test_non_integer_values_are_refused(tmp_path):
    ct = random_ct()
    probabilities = np.full(ct.shape, 0.5, dtype=np.float32)
    path = tmp_path / "probabilities.nii.gz"
    sitk.WriteImage(ct.to_sitk(probabilities), str(path))
    with pytest.raises(InputError, match=r"non-integer values \(e\.g\. 0\.5\)"):
        read_labels(path, ct)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"origin": (-12.5, 30.25, -98.5)}, r"origin \(-12\.5, 30\.25, -98\.5\) vs the CT's \(-12\.5, 30\.25, -101\) mm"),
        ({"spacing": (0.7, 0.6, 3.0)}, r"spacing \(0\.7, 0\.6, 3\) vs the CT's \(0\.7, 0\.6, 2\.5\) mm"),
        ({"direction": (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)}, r"direction \(-1, 0, 0, 0, -1, 0, 0, 0, 1\) vs"),
        ({"shape": (5, 8, 10)}, r"size \(10, 8, 5\) vs the CT's \(10, 8, 6\) voxels"),
    ],
    ids=["origin", "spacing", "direction", "size"],
)
def test_geometry_mismatch_says_what_differs(tmp_path, change, expected):
    ct = random_ct()
    other = random_ct(**change)
    path = write_labels(np.zeros(other.shape, np.uint8), other, tmp_path / "labels.nii.gz")
    with pytest.raises(InputError, match=r"does not match the CT grid: " + expected) as raised:
        read_labels(path, ct)
    assert "resample the label map onto the CT grid" in str(raised.value)


def test_float32_rounding_of_geometry_is_tolerated(tmp_path):
    ct = random_ct(spacing=(0.123456789, 0.6, 2.5), origin=(-123.456789012, 30.25, -101.000001))
    labels = labels_for(ct)
    path = write_labels(labels, ct, tmp_path / "labels.nii")
    np.testing.assert_array_equal(read_labels(path, ct), labels)


def test_bad_label_inputs(tmp_path):
    ct = random_ct()
    with pytest.raises(InputError, match="does not exist"):
        read_labels(tmp_path / "none.nii.gz", ct)
    with pytest.raises(InputError, match="is a folder"):
        read_labels(tmp_path, ct)
    image_path = write_image(ct.with_array(np.zeros(ct.shape, np.float32) + 0.5), tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="non-integer"):
        read_labels(image_path, ct)
    with pytest.raises(InputError, match=r"label map shape \(2, 2, 2\) differs from the CT's \(6, 8, 10\)"):
        write_labels(np.zeros((2, 2, 2), np.uint8), ct, tmp_path / "x.nrrd")
