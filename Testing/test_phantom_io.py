"""Phantom files: DICOM/NIfTI round trip, COCA-style calcium XML, and the `cacscoring phantom` command."""

from __future__ import annotations

import json
import plistlib
import re

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import polygon

from CACScoringLib.cli import main
from CACScoringLib.io import read_ct, read_labels
from CACScoringLib.labels import ARTERIES, ARTERY_LABELS
from CACScoringLib.phantom import make_thorax_phantom, write_coca_xml, write_thorax_case
from CACScoringLib.scoring import ScoringParams, score_volume

SMALL = {"shape": (20, 128, 128), "spacing": (1.4, 1.4, 3.0)}
NUMBER = re.compile(r"[-+]?\d+\.?\d*")


@pytest.fixture(scope="module")
def phantom():
    return make_thorax_phantom(seed=3, p_no_calcium=0.0, **SMALL)


def test_dicom_series_reads_back_with_the_same_hu_and_geometry(phantom, tmp_path):
    files = write_thorax_case(phantom, tmp_path, fmt="dicom")
    ct = read_ct(files["dicom"])
    assert ct.shape == phantom.ct.shape
    np.testing.assert_allclose(ct.spacing, phantom.ct.spacing, atol=1e-4)
    np.testing.assert_allclose(ct.origin, phantom.ct.origin, atol=1e-4)
    np.testing.assert_allclose(ct.direction, phantom.ct.direction, atol=1e-6)
    np.testing.assert_array_equal(ct.array, phantom.ct.array)  # whole HU survive int16 storage
    assert ct.info.kvp == 120.0 and ct.info.slice_thickness_mm == pytest.approx(3.0)
    labels = read_labels(files["labels"], ct)
    np.testing.assert_array_equal(labels, phantom.labels)
    assert score_volume(ct, labels, ScoringParams()).total.agatston == pytest.approx(
        phantom.scores.total.agatston
    )


def test_nifti_pair_reads_back(phantom, tmp_path):
    files = write_thorax_case(phantom, tmp_path, fmt="nifti")
    assert files["ct"].name == "thorax_ct.nii.gz" and files["labels"].name == "thorax_labels.nii.gz"
    ct = read_ct(files["ct"])
    np.testing.assert_array_equal(ct.array, phantom.ct.array)
    np.testing.assert_array_equal(read_labels(files["labels"], ct), phantom.labels)


def _points(strings, dims):
    points = np.array([[float(v) for v in NUMBER.findall(s)] for s in strings])
    assert points.shape[1] == dims
    return points


def test_coca_xml_is_a_plist_whose_polygons_refill_the_labels(phantom, tmp_path):
    path = write_coca_xml(phantom.ct, phantom.labels, tmp_path / "case.xml")
    with open(path, "rb") as f:
        document = plistlib.load(f)
    names = {artery.coca_roi_names[0]: artery.id for artery in ARTERY_LABELS}
    n_slices = phantom.ct.shape[0]
    refilled = np.zeros_like(phantom.labels)
    regions_seen = 0
    assert document["Images"], "seed 3 with p_no_calcium=0 has calcium"
    for image in document["Images"]:
        assert image["NumberOfROIs"] == len(image["ROIs"])
        k = n_slices - 1 - image["ImageIndex"]  # COCA: ImageIndex i is slice n-1-i in position order
        z = phantom.ct.origin[2] + k * phantom.ct.spacing[2]
        for index, roi in enumerate(image["ROIs"]):
            assert roi["Type"] == 15 and roi["IndexInImage"] == index
            assert roi["NumberOfPoints"] == len(roi["Point_px"]) == len(roi["Point_mm"])
            label = names[roi["Name"]]
            px, mm = _points(roi["Point_px"], 2), _points(roi["Point_mm"], 3)
            np.testing.assert_allclose(mm[:, 2], z, atol=1e-5)
            np.testing.assert_allclose(
                mm[:, :2], np.array(phantom.ct.origin[:2]) + px * phantom.ct.spacing[:2], atol=1e-5
            )
            mask = np.zeros(phantom.labels.shape[1:], dtype=bool)
            rr, cc = polygon(px[:, 1], px[:, 0], mask.shape)
            mask[rr, cc] = True
            # The connected region of this label that the polygon covers.
            regions, _ = ndimage.label(phantom.labels[k] == label, structure=np.ones((3, 3)))
            region = np.isin(regions, np.unique(regions[mask & (regions > 0)]))
            iou = (mask & region).sum() / (mask | region).sum()
            assert iou >= 0.8, (roi["Name"], k, iou)
            assert roi["Area"] == pytest.approx(region.sum() * phantom.ct.pixel_area_mm2)
            hu = phantom.ct.array[k][region]
            assert (
                roi["Max"] == hu.max() and roi["Min"] == hu.min() and roi["Mean"] == pytest.approx(hu.mean())
            )
            refilled[k][mask] = label
            regions_seen += 1
    assert regions_seen >= len(phantom.plaques) // 2
    np.testing.assert_array_equal(refilled, phantom.labels)


def test_cli_writes_the_files_and_truth(tmp_path, capsys):
    out = tmp_path / "demo"
    args = [
        "phantom",
        str(out),
        "--seed",
        "3",
        "--shape",
        *map(str, SMALL["shape"]),
        "--coca-xml",
        "--noise",
        "12",
    ]
    assert main(args) == 0
    for name in ("thorax_ct.nii.gz", "thorax_labels.nii.gz", "thorax_coca.xml", "truth.json"):
        assert (out / name).is_file(), name
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    assert truth["seed"] == 3 and truth["noise_hu"] == 12.0 and truth["shape_zyx"] == list(SMALL["shape"])
    ct = read_ct(out / "thorax_ct.nii.gz")
    rescored = score_volume(ct, read_labels(out / "thorax_labels.nii.gz", ct), ScoringParams())
    assert truth["scores"]["total"]["agatston"] == pytest.approx(rescored.total.agatston)
    assert truth["plaques"] and {p["artery"] for p in truth["plaques"]} <= set(ARTERIES)
    assert f"Agatston {rescored.total.agatston:.1f}" in capsys.readouterr().out


def test_cli_count_writes_case_folders_with_consecutive_seeds(tmp_path):
    assert main(["phantom", str(tmp_path), "--count", "2", "--seed", "5", "--shape", "12", "64", "64"]) == 0
    seeds = [json.loads((tmp_path / f"case_{i:03d}" / "truth.json").read_text(encoding="utf-8"))["seed"] for i in range(2)]
    assert seeds == [5, 6]


def test_cli_clearance_options_reach_the_generator(tmp_path):
    """`none` and 0 give the phantoms drawn before the clearances; the defaults move the descending aorta."""
    shape = ["16", "200", "200"]
    assert main(["phantom", str(tmp_path / "before"), "--seed", "10044", "--shape", *shape, "--noise", "0",
                 "--bifurcation-clearance-mm", "0", "--descending-aorta-clearance-mm", "none"]) == 0  # fmt: skip
    assert main(["phantom", str(tmp_path / "now"), "--seed", "10044", "--shape", *shape, "--noise", "0"]) == 0
    expected = make_thorax_phantom(
        seed=10044, shape=(16, 200, 200), noise_hu=0.0, bifurcation_clearance_mm=0.0, descending_aorta_clearance_mm=None
    )
    before, now = (read_ct(tmp_path / name / "thorax_ct.nii.gz").array for name in ("before", "now"))
    np.testing.assert_array_equal(before, expected.ct.array)
    assert not np.array_equal(now, before)
    truth = json.loads((tmp_path / "now" / "truth.json").read_text(encoding="utf-8"))
    assert truth["anatomy"]["descending_aorta"]["start_mm"] != expected.anatomy["descending_aorta"]["start_mm"]


def test_cli_calibration_writes_rods_and_truth(tmp_path):
    assert main(["phantom", str(tmp_path), "--kind", "calibration", "--noise", "0"]) == 0
    truth = json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))
    assert len(truth["inserts"]) == 9
    ct = read_ct(tmp_path / "calibration_ct.nii.gz")
    rois = read_labels(tmp_path / "calibration_rois.nii.gz", ct)
    assert ct.array[rois == 1].mean() == pytest.approx(truth["hu_model"]["water_hu"], abs=1.0)
    assert ct.array[rois == 2].mean() == pytest.approx(200 * truth["hu_model"]["ha_hu_per_mg_cm3"], abs=1.0)


@pytest.mark.parametrize(
    "extra",
    [
        ["--count", "0"],
        ["--noise", "-1"],
        ["--kind", "calibration", "--shape", "10", "64", "64"],
        ["--bifurcation-clearance-mm", "-1"],
    ],
)
def test_cli_rejects_bad_options_with_exit_code_2(tmp_path, extra, capsys):
    assert main(["phantom", str(tmp_path), *extra]) == 2
    assert capsys.readouterr().err.startswith("cacscoring: error:")
