"""`cacscoring batch`: every case scored, broken ones reported without stopping the rest."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from io_helpers import write_study
from pydicom.uid import generate_uid

from CACScoringLib.batch import find_cases
from CACScoringLib.cli import main
from CACScoringLib.io import write_dicom_series, write_image, write_labels
from CACScoringLib.scoring import ScoringParams, score_volume
from CACScoringLib.volume import CTVolume, ScanInfo


def lesion_case(peak_hu: float):
    """One 4 mm² LAD lesion (16 px of 0.25 mm²) on one 3 mm slice."""
    hu = np.full((3, 12, 12), 40.0, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    hu[1, 4:8, 4:8] = peak_hu
    labels[1, 4:8, 4:8] = 2
    return CTVolume(hu, (0.5, 0.5, 3.0), info=ScanInfo(slice_thickness_mm=3.0, kvp=120.0)), labels


def test_batch_scores_files_and_dicom_folders_and_reports_failures(tmp_path, capsys):
    cases, label_dir = tmp_path / "cases", tmp_path / "labels"
    cases.mkdir()
    label_dir.mkdir()
    expected = {}
    for name, peak, weight in (("alpha", 250.0, 2), ("beta", 450.0, 4)):
        ct, labels = lesion_case(peak)
        write_image(ct, cases / f"{name}.nii.gz")
        write_labels(labels, ct, label_dir / f"{name}.nii.gz")
        expected[name] = 4.0 * weight
    ct, labels = lesion_case(350.0)
    write_dicom_series(ct, cases / "gamma", slice_thickness=3.0)
    write_labels(labels, ct, label_dir / "gamma.nii.gz")
    expected["gamma"] = 4.0 * 3
    (cases / "broken.nii.gz").write_bytes(b"not a nifti")
    ct, _ = lesion_case(300.0)
    write_image(ct, cases / "unlabelled.nrrd")

    out = tmp_path / "out"
    assert main(["batch", str(cases), str(out), "--labels", str(label_dir)]) == 1
    rows = {row["case"]: row for row in csv.DictReader((out / "summary.csv").open(encoding="utf-8"))}
    assert set(rows) == {"alpha", "beta", "gamma", "broken", "unlabelled"}
    for name, agatston in expected.items():
        assert rows[name]["status"] == "ok"
        assert float(rows[name]["LAD"]) == pytest.approx(agatston)
        assert float(rows[name]["total_agatston"]) == pytest.approx(agatston)
        report = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert report["total"]["agatston"] == pytest.approx(agatston)
    assert rows["broken"]["status"] == "failed" and "broken.nii.gz" in rows["broken"]["message"]
    assert rows["unlabelled"]["status"] == "failed" and "no label map" in rows["unlabelled"]["message"]
    assert "3 of 5 cases scored" in capsys.readouterr().out


def test_batch_without_any_model_fails_per_case_with_the_reason(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    ct, _ = lesion_case(300.0)
    write_image(ct, cases / "one.nii.gz")
    registry = tmp_path / "no_such_model"
    assert main(["batch", str(cases), str(tmp_path / "out"), "--model", str(registry)]) == 1
    row = next(csv.DictReader((tmp_path / "out" / "summary.csv").open(encoding="utf-8")))
    assert row["status"] == "failed" and row["message"]


def test_batch_rejects_a_missing_input(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_batch_on_study_folders_scores_each_study_s_calcium_series(tmp_path):
    cohort, label_dir = tmp_path / "cohort", tmp_path / "labels"
    label_dir.mkdir()
    studies = {name: write_study(cohort / name / "DICOM", seed=seed, patient_id=name)
               for name, seed in (("anna", 3), ("bert", 5))}
    for name, written in studies.items():
        _, phantom = written["calcium_3mm"]
        write_labels(phantom.labels, phantom.ct, label_dir / f"{name}.nii.gz")

    # A folder of studies: one case per study. One study's folder given directly: one case, not four series.
    for source, names in ((cohort, ["anna", "bert"]), (cohort / "anna" / "DICOM", ["DICOM"])):
        out = tmp_path / f"out_{len(names)}"
        labels = label_dir if len(names) > 1 else label_dir / "anna.nii.gz"
        assert main(["batch", str(source), str(out), "--labels", str(labels)]) == 0
        rows = list(csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
        assert [row["case"] for row in rows] == names
        for row, study in zip(rows, names if len(names) > 1 else ["anna"], strict=True):
            uid, phantom = studies[study]["calcium_3mm"]
            ct = phantom.ct.with_array(np.rint(phantom.ct.array))
            assert float(row["total_agatston"]) == pytest.approx(
                round(score_volume(ct, phantom.labels, ScoringParams()).total.agatston, 2))
            report = json.loads((out / f"{row['case']}.json").read_text(encoding="utf-8"))
            assert report["input"]["series"]["series_instance_uid"] == uid
            assert {item["reason"] for item in report["input"]["series"]["passed_over"]} == {
                "a localizer (scout)", "slice thickness 1 mm (2.5-3 mm preferred)",
                "contrast-enhanced (ContrastBolusAgent 'Iomeprol 350')"}


def test_series_folders_of_different_studies_stay_separate_cases(tmp_path):
    cases = tmp_path / "cases"
    for name in ("one", "two"):
        write_dicom_series(lesion_case(300.0)[0], cases / name)  # each its own study UID
    assert find_cases(cases) == [("one", cases / "one"), ("two", cases / "two")]
    study = generate_uid()
    for name in ("one", "two"):
        shutil.rmtree(cases / name)
        write_dicom_series(lesion_case(300.0)[0], cases / name, study_uid=study)
    assert find_cases(cases) == [("cases", cases)]
