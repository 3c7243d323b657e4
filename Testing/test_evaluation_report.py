"""`cacscoring evaluate` end to end on hand-built NIfTI cases whose scores and overlaps are worked out by hand.

Grid: 0.5 x 0.5 mm pixels (0.25 mm²), 3 mm slices (no slice normalisation), lesions at known HU:
  a: LAD 4x4 px at 250 HU (weight 2) on one slice  -> 4 mm² * 2 = 8;      prediction identical
  b: RCA 4x4 px at 450 HU (weight 4) on two slices -> 2 * 4 * 4 = 32;     prediction: one slice (16)
     plus a false LCX lesion 4x4 px at 250 HU (8)
  c: no calcium; prediction empty
  d: LM 6x6 px at 350 HU (weight 3) on one slice   -> 9 mm² * 3 = 27;     prediction calls it LAD
"""

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from CACScoringLib.cli import main
from CACScoringLib.data.manifest import ManifestCase, write_manifest
from CACScoringLib.io import read_ct, read_labels, write_image, write_labels
from CACScoringLib.labels import LABEL_ID
from CACScoringLib.volume import CTVolume

torch.set_num_threads(1)
LM, LAD, LCX, RCA = (LABEL_ID[k] for k in ("LM", "LAD", "LCX", "RCA"))
SHAPE = (4, 24, 24)
SPACING = (0.5, 0.5, 3.0)
EXPECTED_AGATSTON = {"a": (8.0, 8.0), "b": (32.0, 24.0), "c": (0.0, 0.0), "d": (27.0, 27.0)}  # (reference, predicted)


def _cases():
    cases = {}
    for case_id in "abcd":
        hu = np.full(SHAPE, 40.0, np.float32)
        reference, predicted = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
        if case_id == "a":
            hu[1, 4:8, 4:8] = 250
            reference[1, 4:8, 4:8] = predicted[1, 4:8, 4:8] = LAD
        elif case_id == "b":
            hu[1:3, 10:14, 10:14] = 450
            reference[1:3, 10:14, 10:14] = RCA
            predicted[1, 10:14, 10:14] = RCA
            hu[3, 18:22, 2:6] = 250
            predicted[3, 18:22, 2:6] = LCX
        elif case_id == "d":
            hu[2, 2:8, 14:20] = 350
            reference[2, 2:8, 14:20] = LM
            predicted[2, 2:8, 14:20] = LAD
        cases[case_id] = (CTVolume(hu, SPACING), reference, predicted)
    return cases


@pytest.fixture
def dataset(tmp_path):
    for case_id, (ct, reference, predicted) in _cases().items():
        image_name = f"{case_id}_0000.nii.gz" if case_id == "a" else f"{case_id}.nii.gz"  # nnU-Net naming too
        write_image(ct, tmp_path / "images" / image_name)
        write_labels(reference, ct, tmp_path / "ref" / f"{case_id}.nii.gz")
        write_labels(predicted, ct, tmp_path / "pred" / f"{case_id}.nii.gz")
    return tmp_path


def run_evaluate(*argv):
    return main(["evaluate", *map(str, argv), "--bootstrap", "200", "--quiet"])


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {(row["case_id"], row["artery"]): row for row in csv.DictReader(f)}


def test_folders_report_hand_worked_values(dataset):
    out = dataset / "report"
    assert run_evaluate("--pred", dataset / "pred", "--ref", dataset / "ref", "--images", dataset / "images",
                        "--output", out) == 0
    rows = _read_rows(out / "cases.csv")
    assert len(rows) == 4 * 5
    for case_id, (reference, predicted) in EXPECTED_AGATSTON.items():
        assert float(rows[case_id, "total"]["reference_agatston"]) == pytest.approx(reference)
        assert float(rows[case_id, "total"]["predicted_agatston"]) == pytest.approx(predicted)
    assert float(rows["b", "RCA"]["predicted_agatston"]) == pytest.approx(16.0)
    assert float(rows["b", "LCX"]["predicted_agatston"]) == pytest.approx(8.0)
    assert float(rows["b", "RCA"]["reference_volume_mm3"]) == pytest.approx(32 * 0.75)  # 32 voxels of 0.75 mm³
    assert float(rows["a", "LAD"]["dice"]) == 1.0
    assert float(rows["b", "RCA"]["dice"]) == pytest.approx(2 * 16 / (2 * 16 + 16))
    assert float(rows["d", "LM"]["recall"]) == 0.0 and rows["d", "LM"]["precision"] == ""  # nothing predicted
    assert float(rows["d", "total"]["dice"]) == 1.0 and float(rows["d", "total"]["lesion_f1"]) == 1.0
    assert rows["b", "total"]["predicted_risk_category"] == "11-100"

    report = json.loads((out / "evaluation.json").read_text(encoding="utf-8"), parse_constant=pytest.fail)  # strict JSON
    summary = report["summary"]
    foreground = summary["voxels"]["coronary"]["pooled"]
    assert (foreground["tp"], foreground["fp"], foreground["fn"]) == (16 + 16 + 36, 16, 16)
    assert foreground["dice"] == pytest.approx(2 * 68 / (2 * 68 + 32))
    matched = summary["lesions"]["all_arteries"]
    # reference lesions a, b, d; predicted a, b (RCA), b (LCX, false), d (LAD, wrong artery)
    assert (matched["reference"], matched["detected"], matched["predicted"], matched["true"]) == (3, 2, 4, 2)
    coronary = summary["lesions"]["coronary"]
    assert (coronary["reference"], coronary["detected"], coronary["predicted"], coronary["true"]) == (3, 3, 4, 3)
    assert coronary["f1"] == pytest.approx(2 * 1.0 * 0.75 / 1.75)

    total = summary["agreement"]["agatston"]["total"]
    reference, predicted = zip(*(EXPECTED_AGATSTON[c] for c in "abcd"), strict=True)
    assert total["n"] == 4
    assert total["pearson"]["r"] == pytest.approx(stats.pearsonr(reference, predicted).statistic)
    assert total["bland_altman"]["mean_difference"] == pytest.approx(-8 / 4)
    risk = summary["risk_categories"]
    assert risk["confusion_matrix"] == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 2, 0, 0], [0] * 5, [0] * 5]
    assert risk["kappa_linear"] == 1.0
    assert report["summary"]["agreement"]["agatston"]["LCX"]["regression"]["slope"] is None  # no reference LCX
    for name in ("agatston_scatter", "agatston_bland_altman", "volume_mm3_scatter", "volume_mm3_bland_altman",
                 "risk_confusion"):
        path = out / report["files"][name]
        assert path.stat().st_size > 10_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_manifests_give_the_same_summary(dataset):
    run_evaluate("--pred", dataset / "pred", "--ref", dataset / "ref", "--images", dataset / "images",
                 "--output", dataset / "folders", "--no-plots")
    rows = [("a", "images/a_0000.nii.gz", "ref/a.nii.gz")] + [(c, f"images/{c}.nii.gz", f"ref/{c}.nii.gz") for c in "bcd"]
    with open(dataset / "cases.csv", "w", newline="") as f:
        csv.writer(f).writerows([("case_id", "image", "labels"), *rows])
    run_evaluate("--pred", dataset / "pred", "--manifest", dataset / "cases.csv", "--output", dataset / "csv", "--no-plots")
    folders = json.loads((dataset / "folders" / "evaluation.json").read_text(encoding="utf-8"))
    from_csv = json.loads((dataset / "csv" / "evaluation.json").read_text(encoding="utf-8"))
    assert from_csv["summary"] == folders["summary"]


def test_manifest_json_with_a_scores_only_case(dataset):
    cases = [
        ManifestCase(c, dataset / "images" / f"{c}.nii.gz", dataset / "ref" / f"{c}.nii.gz", SPACING, SHAPE)
        for c in "bcd"
    ]
    # a: reference given as scores only (like COCA non-gated)
    scores = {"total": {"agatston": 10.0}, "LAD": {"agatston": 10.0}}
    cases.append(ManifestCase("a", dataset / "images" / "a_0000.nii.gz", None, SPACING, SHAPE, scores))
    manifest = write_manifest(dataset / "data", "test", cases)
    run_evaluate("--pred", dataset / "pred", "--manifest", manifest, "--output", dataset / "out", "--no-plots")
    summary = json.loads((dataset / "out" / "evaluation.json").read_text(encoding="utf-8"))["summary"]
    assert summary["n_cases"] == 4 and summary["n_cases_with_reference_labels"] == 3
    assert summary["agreement"]["agatston"]["total"]["reference_mean"] == pytest.approx((10 + 32 + 0 + 27) / 4)
    assert summary["agreement"]["volume_mm3"]["total"]["n"] == 3  # case a has no reference volume
    assert summary["lesions"]["all_arteries"]["reference"] == 2  # b and d


def test_model_predictions_are_segmented_saved_and_evaluated(dataset):
    from CACScoringLib.inference import segment
    from CACScoringLib.models import build_network, make_config, save_package

    torch.manual_seed(0)
    config = make_config("UNet", 2, (16, 16), channels=(4, 8), strides=(2,), num_res_units=0)
    model = save_package(dataset / "tiny", build_network(config), config, {"id": "tiny"})
    out = dataset / "model"
    run_evaluate("--model", model, "--ref", dataset / "ref", "--images", dataset / "images", "--output", out,
                 "--device", "cpu", "--roi", "whole", "--save-predictions", "--no-plots")
    for case_id in "abcd":
        image = dataset / "images" / (f"{case_id}_0000.nii.gz" if case_id == "a" else f"{case_id}.nii.gz")
        ct = read_ct(image)
        expected = segment(ct, model=model, device="cpu", roi="whole").labels
        np.testing.assert_array_equal(read_labels(out / "predictions" / f"{case_id}.nii.gz", ct), expected)
    run_evaluate("--pred", out / "predictions", "--ref", dataset / "ref", "--images", dataset / "images",
                 "--output", dataset / "saved", "--no-plots")
    from_model = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))["summary"]
    from_files = json.loads((dataset / "saved" / "evaluation.json").read_text(encoding="utf-8"))["summary"]
    assert from_model == from_files


def test_single_case_reports_without_agreement(dataset):
    for case_id in "bcd":
        (dataset / "ref" / f"{case_id}.nii.gz").unlink()
    run_evaluate("--pred", dataset / "pred", "--ref", dataset / "ref", "--images", dataset / "images",
                 "--output", dataset / "one", "--linear-axes")
    report = json.loads((dataset / "one" / "evaluation.json").read_text(encoding="utf-8"))
    assert report["summary"]["agreement"]["agatston"] == {}
    assert any("agreement needs 2" in note for note in report["summary"]["notes"])
    assert report["summary"]["risk_categories"]["kappa_linear"] is None  # one category: kappa undefined
    assert set(report["files"]) == {"json", "csv", "risk_confusion"}


def test_bad_inputs_exit_2_naming_the_problem(dataset, capsys):
    folders = ("--ref", dataset / "ref", "--images", dataset / "images", "--output", dataset / "x")

    def error(*argv):
        assert run_evaluate(*argv) == 2
        return capsys.readouterr().err

    (dataset / "pred" / "c.nii.gz").unlink()
    assert "no predicted label map in" in error("--pred", dataset / "pred", *folders)
    assert "case(s) c:" in error("--pred", dataset / "pred", *folders)
    assert "--ref REF_DIR and --images" in error("--pred", dataset / "pred", "--output", dataset / "x")
    assert "needs --model" in error("--pred", dataset / "pred", *folders, "--save-predictions")
    (dataset / "images" / "d.nii.gz").unlink()
    assert "no image in" in error("--pred", dataset / "pred", *folders)
    assert not (dataset / "x").exists()


def test_undefined_statistics_read_the_same_in_plots_and_terminal(tmp_path, monkeypatch):
    """Constant reference scores have no Pearson r (zero variance): the plot title and the terminal table
    both say "—", never "nan"."""
    import io

    from rich.console import Console

    from CACScoringLib.cli.evaluate import print_summary
    from CACScoringLib.evaluation import plots
    from CACScoringLib.evaluation.agreement import score_agreement

    reference, predicted = np.zeros(4), np.array([0.0, 2.0, 5.0, 9.0])
    agreement = score_agreement(reference, predicted, resamples=20)
    assert math.isnan(agreement["pearson"]["r"])
    monkeypatch.setattr(plots, "_save", lambda figure, path: figure)
    figure = plots.scatter_plot({"LAD": (reference, predicted, agreement)}, tmp_path / "s.png", "Agatston")
    title = figure.axes[0].get_title()
    assert "r=—" in title and "nan" not in title

    console = Console(width=120, file=io.StringIO(), color_system=None)
    print_summary({"agreement": {"agatston": {"LAD": agreement}}, "notes": []}, console)
    row = next(line for line in console.file.getvalue().splitlines() if "LAD" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:3] == ["LAD", "4", "—"]  # artery, n, Pearson r
    assert "nan" not in console.file.getvalue()
