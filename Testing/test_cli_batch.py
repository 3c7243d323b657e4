"""`cacscoring batch`: every case scored, broken ones reported without stopping the rest."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from io_helpers import kill_on_second_call_script, write_study
from pydicom.uid import generate_uid

from CACScoringLib.batch import atomic_write_text, find_cases
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


def write_cases(folder, peaks, suffix=".nii.gz", labels_folder=None):
    """One lesion case per name (LAD, 4 mm², Agatston 4 x weight of the peak)."""
    folder.mkdir(exist_ok=True)
    for name, peak in peaks.items():
        ct, labels = lesion_case(peak)
        write_image(ct, folder / f"{name}{suffix}")
        if labels_folder is not None:
            labels_folder.mkdir(exist_ok=True)
            write_labels(labels, ct, labels_folder / f"{name}.nii.gz")


def summary_of(out):
    return {row["case"]: row for row in csv.DictReader((out / "summary.csv").open(encoding="utf-8"))}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("cacscoring: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_one_name_under_two_extensions_is_refused_before_anything_is_written(tmp_path, capsys):
    cases = tmp_path / "cases"
    write_cases(cases, {"a": 250.0})
    write_cases(cases, {"a": 450.0}, suffix=".nrrd")
    assert main(["batch", str(cases), str(tmp_path / "out")]) == 2
    assert "a.nii.gz and a.nrrd" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_two_label_maps_for_one_case_fail_that_case_not_the_wrong_match(tmp_path):
    cases, labels, out = tmp_path / "cases", tmp_path / "labels", tmp_path / "out"
    write_cases(cases, {"a": 250.0, "b": 450.0}, labels_folder=labels)
    ct, other = lesion_case(250.0)
    write_labels(np.zeros_like(other), ct, labels / "a.nrrd")
    assert main(["batch", str(cases), str(out), "--labels", str(labels)]) == 1
    rows = summary_of(out)
    assert rows["a"]["status"] == "failed" and "a.nii.gz, a.nrrd" in rows["a"]["message"]
    assert float(rows["b"]["total_agatston"]) == pytest.approx(16.0) and not (out / "a.json").exists()


def test_a_rerun_keeps_results_refuses_changed_ones_and_overwrites_on_request(tmp_path, capsys):
    cases, labels, out = tmp_path / "cases", tmp_path / "labels", tmp_path / "out"
    write_cases(cases, {"a": 250.0, "b": 450.0}, labels_folder=labels)
    command = ["batch", str(cases), str(out), "--labels", str(labels)]
    assert main(command) == 0
    first = {name: (out / f"{name}.json").stat().st_mtime_ns for name in "ab"}
    assert main(command) == 0
    assert "2 of 2 cases scored (2 kept from an earlier run)" in capsys.readouterr().out
    assert {name: (out / f"{name}.json").stat().st_mtime_ns for name in "ab"} == first
    assert float(summary_of(out)["b"]["total_agatston"]) == pytest.approx(16.0)

    # Other settings: refused, nothing replaced; --overwrite rescores (250 HU is below 300: a scores 0).
    assert main([*command, "--threshold-hu", "300"]) == 2
    err = one_line_error(capsys)
    assert "a.json, b.json" in err and "give --overwrite" in err
    assert {name: (out / f"{name}.json").stat().st_mtime_ns for name in "ab"} == first
    assert main([*command, "--threshold-hu", "300", "--overwrite"]) == 0
    rows = summary_of(out)
    assert float(rows["a"]["total_agatston"]) == 0.0 and float(rows["b"]["total_agatston"]) == pytest.approx(16.0)

    # Another input under the same name: refused too.
    write_cases(cases, {"b": 350.0})
    capsys.readouterr()
    assert main([*command, "--threshold-hu", "300"]) == 2
    assert "b.json" in one_line_error(capsys)


def test_a_live_lock_refuses_a_second_run_and_a_dead_one_is_taken_over(tmp_path, capsys):
    cases, labels, out = tmp_path / "cases", tmp_path / "labels", tmp_path / "out"
    write_cases(cases, {"a": 250.0}, labels_folder=labels)
    out.mkdir()
    lock = out / ".cacscoring-batch.lock"
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")  # this test: alive
    assert main(["batch", str(cases), str(out), "--labels", str(labels)]) == 2
    err = one_line_error(capsys)
    assert str(lock) in err and f"PID {os.getpid()}" in err
    assert not (out / "a.json").exists() and lock.exists()

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{int(ended.stdout)} {socket.gethostname()}\n", encoding="utf-8")  # a killed run's lock
    assert main(["batch", str(cases), str(out), "--labels", str(labels)]) == 0
    assert (out / "a.json").exists() and not lock.exists()


KILL_ON_SECOND_CASE = kill_on_second_call_script(
    "CACScoringLib.cli.batch", "score_ct", "from CACScoringLib.cli import main\nsys.exit(main(sys.argv[1:]))")


def test_a_run_killed_midway_is_marked_incomplete_and_a_rerun_completes_it(tmp_path, capsys):
    cases, labels, out = tmp_path / "cases", tmp_path / "labels", tmp_path / "out"
    peaks = {"a": 250.0, "b": 350.0, "c": 450.0}
    write_cases(cases, peaks, labels_folder=labels)
    command = ["batch", str(cases), str(out), "--labels", str(labels)]
    killed = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_CASE, *command], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = json.loads((out / "batch_run.json").read_text(encoding="utf-8"))
    assert run["complete"] is False and set(run["cases"]) == {"a"}
    rows = summary_of(out)
    assert rows["a"]["status"] == "ok" and float(rows["a"]["total_agatston"]) == pytest.approx(8.0)
    assert rows["b"]["status"] == rows["c"]["status"] == "pending" and "cut short" in rows["b"]["message"]
    assert sorted(p.name for p in out.iterdir()) == [".cacscoring-batch.lock", "a.json", "batch_run.json",
                                                     "summary.csv"]  # no half-written file

    assert main(command) == 0
    assert "3 of 3 cases scored (1 kept from an earlier run)" in capsys.readouterr().out
    run = json.loads((out / "batch_run.json").read_text(encoding="utf-8"))
    assert run["complete"] is True and run["cases"]["a"] == {"status": "ok", "kept": True}
    rows = summary_of(out)
    for name, peak in peaks.items():
        report = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert report["total"]["agatston"] == pytest.approx(4.0 * (2 + (peak >= 300) + (peak >= 400)))
        assert float(rows[name]["total_agatston"]) == pytest.approx(round(report["total"]["agatston"], 2))
    assert not (out / ".cacscoring-batch.lock").exists()


def test_an_output_that_is_a_file_or_read_only_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    cases = tmp_path / "cases"
    write_cases(cases, {"a": 250.0})
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["batch", str(cases), str(afile)]) == 2
    assert "is a file" in one_line_error(capsys)
    assert main(["batch", str(cases), str(afile / "out")]) == 2
    assert "cannot create output folder" in one_line_error(capsys)
    # chmod does not stop root, so the denial is simulated as the OS reports it to anyone else.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert main(["batch", str(cases), str(tmp_path / "out")]) == 2
    assert "is not writable" in one_line_error(capsys)


def test_atomic_write_leaves_the_old_file_whole_when_writing_fails(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "new \udc80")  # fails inside the write
    assert target.read_text(encoding="utf-8") == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_kept_result_edited_into_nonsense_is_reported_not_a_crash(tmp_path):
    cases, labels, out = tmp_path / "cases", tmp_path / "labels", tmp_path / "out"
    write_cases(cases, {"a": 250.0}, labels_folder=labels)
    command = ["batch", str(cases), str(out), "--labels", str(labels)]
    assert main(command) == 0
    report = json.loads((out / "a.json").read_text(encoding="utf-8"))
    del report["arteries"]  # same origin record, no scores
    (out / "a.json").write_text(json.dumps(report), encoding="utf-8")
    assert main(command) == 1
    row = summary_of(out)["a"]
    assert row["status"] == "failed" and "a.json is missing or unreadable" in row["message"]


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


KILL_RANK_1_ON_ITS_SECOND_CASE = kill_on_second_call_script(
    "CACScoringLib.cli.batch", "score_ct", "from CACScoringLib.cli import main\nsys.exit(main(sys.argv[1:]))",
    condition='os.environ["RANK"] == "1"')


def torchrun(*arguments, cwd) -> subprocess.CompletedProcess:
    """Two ranks on this machine, as `torchrun --standalone --nproc-per-node 2` starts them (gloo, CPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=environment, timeout=600)


@pytest.mark.slow
def test_two_torchrun_ranks_share_the_cases_and_a_rerun_after_a_kill_completes_the_run(tmp_path, capsys):
    cases, labels, out, alone = tmp_path / "cases", tmp_path / "labels", tmp_path / "out", tmp_path / "alone"
    peaks = dict(zip("abcdef", (250.0, 350.0, 450.0, 250.0, 350.0, 450.0), strict=True))
    write_cases(cases, peaks, labels_folder=labels)
    command = ["batch", str(cases), str(out), "--labels", str(labels)]
    script = tmp_path / "kill_rank_1.py"
    script.write_text(KILL_RANK_1_ON_ITS_SECOND_CASE, encoding="utf-8")

    killed = torchrun(str(script), *command, cwd=tmp_path)
    assert killed.returncode != 0
    # Rank 1 holds b, d, f (every second case): b scored, then killed on d, so d and f were never scored.
    assert (out / "b.json").exists() and not (out / "d.json").exists() and not (out / "f.json").exists()
    done_before = {p.stem for p in out.glob("?.json")}

    rerun = torchrun("-m", "CACScoringLib", *command, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"6 of 6 cases scored ({len(done_before)} kept from an earlier run) by 2 processes" in rerun.stdout
    run = json.loads((out / "batch_run.json").read_text(encoding="utf-8"))
    assert run["complete"] is True and run["world_size"] == 2 and set(run["cases"]) == set(peaks)
    assert {case for case, record in run["cases"].items() if record.get("kept")} == done_before
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{c}.json" for c in peaks), "batch_run.json",
                                                            "summary.csv"])  # no rank records, no lock
    assert main(["batch", str(cases), str(alone), "--labels", str(labels)]) == 0
    capsys.readouterr()
    ranked, single = summary_of(out), summary_of(alone)
    for name, peak in peaks.items():
        assert ranked[name]["status"] == "ok"
        assert float(ranked[name]["total_agatston"]) == pytest.approx(4.0 * (2 + (peak >= 300) + (peak >= 400)))
        assert {k: v for k, v in ranked[name].items() if k != "seconds"} == {
            k: v for k, v in single[name].items() if k != "seconds"}


def test_on_large_cohorts_the_summary_is_rewritten_only_while_it_costs_a_tenth_of_the_run(tmp_path, monkeypatch):
    import CACScoringLib.cli.batch as batch

    names = [f"case{i}" for i in range(batch.ALWAYS_SUMMARISE + 1)]
    summary = batch._Summary(tmp_path, names)
    clock = iter([0.0, 0.2, 1.0, 1.9, 2.1, 2.3])  # perf_counter readings: before and after each rewrite
    monkeypatch.setattr(batch.time, "perf_counter", lambda: next(clock))
    run = {"cases": {}}
    assert summary.write(run, force=True)  # 0.0-0.2 s: the next rewrite waits until 0.0 + 0.2 / 0.1 = 2.0 s
    assert summary.write(run) == []  # at 1.0 s: too soon
    assert summary.write(run) == []  # at 1.9 s
    assert len(summary.write(run)) == len(names)  # at 2.1 s: rewritten
    small = batch._Summary(tmp_path, names[:3])
    monkeypatch.setattr(batch.time, "perf_counter", lambda: 0.0)
    assert all(len(small.write(run)) == 3 for _ in range(3))  # small runs: after every case
