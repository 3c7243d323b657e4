"""Contrast-enhanced CT: the blood pool is measured, named, and the risk category marked not valid in the
CLI's table, its JSON and the batch summary; the threshold is an option."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from CACScoringLib.anatomy import find_heart
from CACScoringLib.cli import main
from CACScoringLib.io import write_image, write_labels
from CACScoringLib.phantom import make_thorax_phantom
from CACScoringLib.scoring import NOT_VALID_ON_CONTRAST

ENHANCEMENT_HU = 260.0


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """The same phantom plain and with its blood pool and myocardium enhanced by 260 HU (40 -> 300 HU)."""
    folder = tmp_path_factory.mktemp("contrast")
    phantom = make_thorax_phantom(seed=3, noise_hu=10.0)
    heart, _ = find_heart(phantom.ct)
    enhanced = phantom.ct.array.copy()
    enhanced[heart.on_ct_grid() & (np.abs(phantom.ct.array - 40.0) < 30.0) & (phantom.labels == 0)] += ENHANCEMENT_HU
    (folder / "cases").mkdir()
    write_image(phantom.ct, folder / "cases" / "plain.nii.gz")
    write_image(phantom.ct.with_array(enhanced), folder / "cases" / "cta.nii.gz")
    (folder / "labels").mkdir()
    for name in ("plain", "cta"):
        write_labels(phantom.labels, phantom.ct, folder / "labels" / f"{name}.nii.gz")
    return folder, phantom


def score(folder, name, *options):
    out = folder / f"{name}{len(options)}.json"
    code = main(["score", str(folder / "cases" / f"{name}.nii.gz"), "--labels",
                 str(folder / "labels" / f"{name}.nii.gz"), "--json", str(out), *options])
    assert code == 0
    return json.loads(out.read_text(encoding="utf-8"))


def test_plain_ct_is_checked_and_valid(phantoms, capsys):
    folder, phantom = phantoms
    report = score(folder, "plain")
    assert report["risk_category_valid"] and report["risk_category"] != NOT_VALID_ON_CONTRAST
    assert 30.0 < report["contrast"]["blood_pool_hu"] < 60.0 and not report["contrast"]["enhanced"]
    assert report["total"]["agatston"] == pytest.approx(phantom.scores.total.agatston)
    assert "no contrast" in capsys.readouterr().out


def test_contrast_ct_scores_but_marks_the_category_not_valid_naming_the_hu(phantoms, capsys):
    folder, phantom = phantoms
    report = score(folder, "cta")
    measured = report["contrast"]["blood_pool_hu"]
    assert ENHANCEMENT_HU < measured < 40.0 + ENHANCEMENT_HU + 40.0  # 40 HU blood + 260, within noise
    assert report["contrast"]["enhanced"] and not report["risk_category_valid"]
    assert report["risk_category"] == report["cac_drs"] == NOT_VALID_ON_CONTRAST
    assert f"{measured:.0f} HU" in report["warnings"][0] and "contrast-enhanced" in report["warnings"][0]
    printed = capsys.readouterr().out
    assert "not valid" in printed and "contrast-enhanced" in printed
    # The threshold is an option, and the check can be switched off: then the category is given again.
    assert score(folder, "cta", "--contrast-threshold-hu", "400")["risk_category_valid"]
    unchecked = score(folder, "cta", "--no-contrast-check")
    assert unchecked["contrast"] is None and unchecked["risk_category"] == phantom.scores.risk_category
    assert unchecked["parameters"]["contrast_threshold_hu"] is None


def test_batch_summary_names_the_blood_pool_and_the_invalid_category(phantoms):
    folder, _ = phantoms
    out = folder / "batch"
    assert main(["batch", str(folder / "cases"), str(out), "--labels", str(folder / "labels")]) == 0
    rows = {row["case"]: row for row in csv.DictReader((out / "summary.csv").open())}
    assert rows["cta"]["risk_category"] == NOT_VALID_ON_CONTRAST and float(rows["cta"]["blood_pool_hu"]) > 150.0
    assert rows["plain"]["risk_category"] != NOT_VALID_ON_CONTRAST and float(rows["plain"]["blood_pool_hu"]) < 60.0
