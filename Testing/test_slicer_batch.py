"""Batch mode (scripts/slicer_batch.py) under plain Python with slicer-core, as a real child process."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from io_helpers import kill_on_second_call_script
from test_slicer_logic import synthetic_case

pytestmark = pytest.mark.slicer
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slicer_batch.py"


def run_batch(*args) -> subprocess.CompletedProcess:
    pytest.importorskip("slicer", reason="slicer-core is not installed: pip install slicer-core vtk==9.6.2")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_batch_scores_every_case_and_reports_the_broken_one(tmp_path):
    cases, labels = tmp_path / "cases", tmp_path / "labels"
    cases.mkdir()
    labels.mkdir()
    ct, label_map = synthetic_case()
    for name in ("alpha", "beta"):
        sitk.WriteImage(ct.to_sitk(), str(cases / f"{name}.nii.gz"))
        sitk.WriteImage(ct.to_sitk(label_map), str(labels / f"{name}.nii.gz"))
    only_rca = label_map * (label_map == 4)
    sitk.WriteImage(ct.to_sitk(only_rca), str(labels / "beta.nii.gz"))
    (cases / "broken.nii.gz").write_bytes(b"not a NIfTI file")
    sitk.WriteImage(ct.to_sitk(label_map), str(labels / "broken.nii.gz"))

    completed = run_batch("--input", cases, "--output", tmp_path / "out", "--labels", labels)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "[3/3]" in completed.stdout and "2 of 3 cases scored" in completed.stdout

    with open(tmp_path / "out" / "summary.csv", newline="", encoding="utf-8") as f:
        rows = {row["case"]: row for row in csv.DictReader(f)}
    assert rows["alpha"]["status"] == "ok" and float(rows["alpha"]["total_agatston"]) == pytest.approx(24.0)
    assert float(rows["alpha"]["LAD"]) == pytest.approx(21.0)
    assert rows["beta"]["status"] == "ok" and float(rows["beta"]["total_agatston"]) == pytest.approx(3.0)
    assert rows["broken"]["status"] == "failed" and "broken.nii.gz" in rows["broken"]["message"]

    report = json.loads((tmp_path / "out" / "alpha" / "alpha_scores.json").read_text(encoding="utf-8"))
    assert report["arteries"]["RCA"]["agatston"] == pytest.approx(3.0)
    assert (tmp_path / "out" / "alpha" / "alpha.seg.nrrd").is_file()
    assert (tmp_path / "out" / "alpha" / "alpha_report.html").is_file()


def test_batch_rejects_a_missing_input_with_exit_code_2(tmp_path):
    completed = run_batch("--input", tmp_path / "nothing", "--output", tmp_path / "out")
    assert completed.returncode == 2
    assert "nothing does not exist" in completed.stderr


@pytest.mark.slow
def test_segmenting_prints_one_line_per_case(tmp_path):
    import torch

    from CACScoringLib.models import build_network, make_config, save_package

    torch.manual_seed(0)
    config = make_config("UNet", 2, (32, 32), channels=(4, 8), strides=(2,), num_res_units=0)
    model = save_package(tmp_path / "tiny", build_network(config), config, {"id": "tiny"})  # untrained: plumbing
    cases = tmp_path / "cases"
    cases.mkdir()
    ct, _ = synthetic_case()
    for name in ("alpha", "beta"):
        sitk.WriteImage(ct.to_sitk(), str(cases / f"{name}.nii.gz"))

    completed = run_batch("--input", cases, "--output", tmp_path / "out", "--model", model, "--device", "cpu")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[1/2] alpha", "[2/2] beta", "2 of 2 cases scored; summary"]


def _cases_with_labels(tmp_path, names=("alpha", "beta", "gamma")):
    cases, labels = tmp_path / "cases", tmp_path / "labels"
    cases.mkdir()
    labels.mkdir()
    ct, label_map = synthetic_case()
    for name in names:
        sitk.WriteImage(ct.to_sitk(), str(cases / f"{name}.nii.gz"))
        sitk.WriteImage(ct.to_sitk(label_map), str(labels / f"{name}.nii.gz"))
    return cases, labels


KILL_ON_SECOND_CASE = kill_on_second_call_script(
    "slicer_batch", "score_case", "sys.exit(target.run(sys.argv[1:]))", prelude="sys.path.insert(0, sys.argv.pop(1))")


def test_a_killed_run_leaves_a_whole_summary_with_pending_cases_and_a_rerun_needs_overwrite(tmp_path):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    cases, labels = _cases_with_labels(tmp_path)
    out = tmp_path / "out"
    arguments = ["--input", cases, "--output", out, "--labels", labels]
    killed = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_CASE, str(SCRIPT.parent), *map(str, arguments)],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = {row["case"]: row for row in csv.DictReader(f)}
    assert rows["alpha"]["status"] == "ok" and float(rows["alpha"]["total_agatston"]) == pytest.approx(24.0)
    assert rows["beta"]["status"] == rows["gamma"]["status"] == "pending"

    refused = run_batch(*arguments)  # the dead run's lock is taken over, but alpha's report is not replaced
    assert refused.returncode == 2 and "already holds reports of alpha" in refused.stderr
    assert "--overwrite" in refused.stderr and refused.stderr.count("\n") == 1
    report = out / "alpha" / "alpha_scores.json"
    written = report.stat().st_mtime_ns
    completed = run_batch(*arguments, "--overwrite")
    assert completed.returncode == 0, completed.stderr
    assert report.stat().st_mtime_ns != written and "3 of 3 cases scored" in completed.stdout
    assert not (out / ".cacscoring-batch.lock").exists()


def test_a_live_run_in_the_output_folder_keeps_a_second_one_out(tmp_path):
    import os
    import socket

    cases, labels = _cases_with_labels(tmp_path, ("alpha",))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cacscoring-batch.lock").write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")
    completed = run_batch("--input", cases, "--output", out, "--labels", labels)
    assert completed.returncode == 2 and "another cacscoring batch is writing" in completed.stderr
    assert sorted(p.name for p in out.iterdir()) == [".cacscoring-batch.lock"]
