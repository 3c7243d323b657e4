"""`cacscoring score` end to end on real NIfTI and DICOM files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from io_helpers import write_study

from CACScoringLib.cli import main
from CACScoringLib.io import write_dicom_series, write_image, write_labels
from CACScoringLib.scoring import ScoringParams, score_volume
from CACScoringLib.volume import CTVolume, ScanInfo


@pytest.fixture
def case(tmp_path):
    """Two LAD slices with a 1 mm² lesion (peak 450 HU, weight 4) and one RCA lesion (peak 250 HU)."""
    hu = np.full((4, 16, 16), 40.0, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    hu[1:3, 2:4, 2:4] = 450.0
    labels[1:3, 2:4, 2:4] = 2
    hu[2, 10:14, 10:14] = 250.0  # 16 px = 4 mm², weight 2
    labels[2, 10:14, 10:14] = 4
    hu[0, 8:12, 0:4] = 900.0  # bone-like, not labelled
    ct = CTVolume(hu, spacing=(0.5, 0.5, 3.0), origin=(-4.0, -4.0, 10.0),
                  info=ScanInfo(slice_thickness_mm=3.0, kvp=120.0))
    image, label_file = tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz"
    write_image(ct, image)
    write_labels(labels, ct, label_file)
    return ct, labels, image, label_file


def test_score_nifti_writes_json_and_csv(case, tmp_path, capsys):
    _, _, image, label_file = case
    out_json, out_csv, lesions_csv = tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "l.csv"
    code = main(["score", str(image), "--labels", str(label_file), "--json", str(out_json),
                 "--csv", str(out_csv), "--lesions-csv", str(lesions_csv), "--mass-calibration-factor", "0.8"])
    assert code == 0
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["arteries"]["LAD"]["agatston"] == pytest.approx(2 * 1.0 * 4)
    assert report["arteries"]["RCA"]["agatston"] == pytest.approx(4.0 * 2)
    assert report["arteries"]["LM"]["agatston"] == 0
    assert report["total"]["agatston"] == pytest.approx(16.0)
    assert report["total"]["volume_mm3"] == pytest.approx((8 + 16) * 0.75)
    assert report["total"]["mass_mg"] == pytest.approx(0.8 * (8 * 0.75 * 450 + 16 * 0.75 * 250) / 1000)
    assert report["arteries"]["LAD"]["lesions"] == 1 and report["total"]["lesions"] == 2
    assert report["risk_category"] == "11-100"
    assert report["cac_drs"] == "A1/N2"
    # NIfTI carries neither slice thickness nor kVp: the report says so.
    assert any("thickness unknown" in w for w in report["warnings"])
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["artery"] for r in rows] == ["LM", "LAD", "LCX", "RCA", "total"]
    assert float(rows[-1]["agatston"]) == pytest.approx(16.0)
    assert len(list(csv.DictReader(lesions_csv.open()))) == 2
    printed = capsys.readouterr().out
    assert "Total" in printed and "A1/N2" in printed


def test_score_dicom_series_matches_nifti(case, tmp_path):
    ct, _, image, label_file = case
    write_dicom_series(ct, tmp_path / "dicom", kvp=120.0, slice_thickness=3.0)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["score", str(tmp_path / "dicom"), "--labels", str(label_file), "--json", str(a), "--quiet"]) == 0
    assert main(["score", str(image), "--labels", str(label_file), "--json", str(b), "--quiet"]) == 0
    from_dicom, from_nifti = json.loads(a.read_text(encoding="utf-8")), json.loads(b.read_text(encoding="utf-8"))
    assert from_dicom["total"] == pytest.approx(from_nifti["total"])
    # DICOM knows thickness and kVp, so those warnings are gone.
    assert not any("unknown" in w and "thickness" in w for w in from_dicom["warnings"])


def test_options_change_the_convention(case, tmp_path):
    _, _, image, label_file = case
    out = tmp_path / "s.json"
    assert main(["score", str(image), "--labels", str(label_file), "--min-area-mm2", "2", "--json", str(out),
                 "--quiet"]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["arteries"]["LAD"]["agatston"] == 0  # 1 mm² lesions dropped
    assert main(["score", str(image), "--labels", str(label_file), "--threshold-hu", "300", "--json", str(out),
                 "--quiet"]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["total"]["agatston"] == pytest.approx(8.0)  # RCA at 250 HU gone


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["score", "{tmp}/missing.nii.gz", "--labels", "{labels}"], "does not exist"),
        (["score", "{image}", "--labels", "{tmp}/other.nii.gz"], "label"),
        (["score", "{image}", "--labels", "{labels}", "--slice-normalization", "thickness"], "thickness is unknown"),
        (["score", "{image}", "--ensemble", "median"], "ensemble rule 'median' is unknown"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, arguments, message):
    ct, _, image, label_file = case
    other = CTVolume(np.zeros((3, 16, 16), np.float32), spacing=(0.5, 0.5, 3.0))
    write_labels(np.zeros((3, 16, 16), np.uint8), other, tmp_path / "other.nii.gz")
    argv = [a.format(tmp=tmp_path, image=image, labels=label_file) for a in arguments]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cacscoring: error:")
    assert "\n" not in err and "Traceback" not in err
    assert message in err


@pytest.mark.parametrize("option", ["--json", "--csv"])
def test_output_under_a_file_or_in_a_read_only_folder_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch,
                                                                              option):
    _, _, image, label_file = case
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["score", str(image), "--labels", str(label_file), "--quiet", option, str(afile / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cacscoring: error: cannot write {afile}") and "\n" not in err

    def denied(*args, **kwargs):  # what a read-only folder answers (chmod does not stop root)
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / "out"))

    monkeypatch.setattr(Path, "write_text", denied)
    monkeypatch.setattr("CACScoringLib.cli.score.open", denied, raising=False)
    assert main(["score", str(image), "--labels", str(label_file), "--quiet", option, str(tmp_path / "ro" / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cacscoring: error: cannot write {tmp_path / 'ro' / 'out'} (Permission denied); give a path in a " \
                  "writable folder"


def test_json_scores_carry_no_float_noise_from_nifti_spacing(tmp_path):
    """0.7 mm pixels are stored as float32 in NIfTI (0.699999988...) and 0.7 * 0.7 is 0.48999999999999994 in
    float64: by hand, 16 pixels of 300 HU (weight 3) on one 3 mm slice are 16 * 0.49 = 7.84 mm², Agatston
    7.84 * 3 = 23.52 and volume 7.84 * 3 mm = 23.52 mm³, and the JSON says exactly that."""
    hu = np.full((3, 20, 20), -50.0, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    hu[1, 5:9, 5:9] = 300.0
    labels[1, 5:9, 5:9] = 2
    ct = CTVolume(hu, spacing=(0.7, 0.7, 3.0))
    image, label_file, out_json = tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz", tmp_path / "s.json"
    write_image(ct, image)
    write_labels(labels, ct, label_file)
    assert main(["score", str(image), "--labels", str(label_file), "--json", str(out_json), "--quiet"]) == 0
    text = out_json.read_text(encoding="utf-8")
    report = json.loads(text)
    assert report["arteries"]["LAD"]["agatston"] == report["total"]["agatston"] == 23.52
    assert report["total"]["volume_mm3"] == 23.52
    assert report["lesions"][0]["area_mm2"] == 7.84
    assert report["lesions"][0]["centroid_zyx"] == [1.0, 6.5, 6.5]
    noisy = [number for number in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text) if len(number.split(".")[1]) > 6]
    assert noisy == []


def rounded_total(phantom) -> float:
    """The phantom's total Agatston on the integer HU its DICOM series stores."""
    ct = phantom.ct.with_array(np.rint(phantom.ct.array))
    return score_volume(ct, phantom.labels, ScoringParams()).total.agatston


def test_score_on_a_study_folder_takes_the_calcium_series_and_says_why(tmp_path, capsys):
    written = write_study(tmp_path / "study")
    uid, phantom = written["calcium_3mm"]
    labels, out = tmp_path / "labels_3mm.nii.gz", tmp_path / "s.json"
    write_labels(phantom.labels, phantom.ct, labels)
    assert main(["score", str(tmp_path / "study"), "--labels", str(labels), "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["total"]["agatston"] == pytest.approx(rounded_total(phantom))
    series = report["input"]["series"]
    assert (series["series_instance_uid"], series["selection"]) == (uid, "automatic")
    assert len(series["passed_over"]) == 3
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"series {uid} 'CaSc 3.0 Qr36' (automatic): non-contrast axial CT (3 mm, 120 kVp")
    assert f"{written['recon_1mm'][0]} 'CaSc 1.0 Qr36': slice thickness 1 mm (2.5-3 mm preferred)" in printed[0]
    assert f"{written['cta_06mm'][0]} 'CorCTA 0.6 Bv40': contrast-enhanced" in printed[0]

    # --series overrides: the 1 mm reconstruction, scored against its own labels.
    uid_1mm, phantom_1mm = written["recon_1mm"]
    write_labels(phantom_1mm.labels, phantom_1mm.ct, labels)
    assert main(["score", str(tmp_path / "study"), "--series", uid_1mm, "--labels", str(labels), "--json", str(out),
                 "--quiet"]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["total"]["agatston"] == pytest.approx(rounded_total(phantom_1mm))
    assert rounded_total(phantom_1mm) != pytest.approx(rounded_total(phantom))  # the two series score differently
    assert report["input"]["series"] == {**report["input"]["series"], "series_instance_uid": uid_1mm,
                                         "selection": "given", "passed_over": []}
    assert capsys.readouterr().out == ""

    assert main(["score", str(tmp_path / "study"), "--series", "1.2.3", "--labels", str(labels)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"cacscoring: error: series 1.2.3 is not in {tmp_path / 'study'}; the series there are: ")
    assert "\n" not in err and all(uid in err for uid, _ in written.values())
