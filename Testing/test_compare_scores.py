"""scripts/compare_scores.py: the demo's per-artery verdict on the model's scores against the reference."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
spec = importlib.util.spec_from_file_location("compare_scores", SCRIPTS / "compare_scores.py")
compare_scores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_scores)

REFERENCE = {
    "arteries": {
        "LM": {"agatston": 41.6, "volume_mm3": 51.84, "lesions": 1},
        "LAD": {"agatston": 78.72, "volume_mm3": 74.88, "lesions": 3},
        "LCX": {"agatston": 0.0, "volume_mm3": 0.0, "lesions": 0},
        "RCA": {"agatston": 60.8, "volume_mm3": 51.84, "lesions": 2},
    },
    "total": {"agatston": 181.12, "volume_mm3": 178.56, "lesions": 6},
    "risk_category": "101-400",
}


def run(tmp_path, other: dict, capsys) -> tuple[int, list[str]]:
    paths = []
    for name, report in (("scores.json", REFERENCE), ("model_scores.json", other)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(report), encoding="utf-8")
    code = compare_scores.main([str(p) for p in paths])
    return code, capsys.readouterr().out.splitlines()


def test_equal_scores_match_artery_by_artery(tmp_path, capsys):
    code, lines = run(tmp_path, copy.deepcopy(REFERENCE), capsys)
    assert code == 0
    assert [line.split()[0] for line in lines[:5]] == ["LM", "LAD", "LCX", "RCA", "total"]
    assert all(line.endswith("match") for line in lines[:6])
    assert "78.7" in lines[1] and lines[-1].startswith("match:")


def test_a_different_artery_is_named_and_exits_1(tmp_path, capsys):
    other = copy.deepcopy(REFERENCE)
    other["arteries"]["RCA"]["agatston"] = 59.8  # one point off
    other["arteries"]["LAD"]["agatston"] = 78.72 + 0.04  # within the 0.05 tolerance
    code, lines = run(tmp_path, other, capsys)
    assert code == 1
    assert lines[1].endswith("match") and lines[3].endswith("differ")
    assert lines[-1] == "differ: the model's scores differ from the reference's in RCA"


def test_a_different_risk_category_differs(tmp_path, capsys):
    other = copy.deepcopy(REFERENCE)
    other["risk_category"] = "11-100"
    code, lines = run(tmp_path, other, capsys)
    assert code == 1 and lines[-1].endswith("in risk category")


@pytest.mark.parametrize("content", ['{"arteries": 3}', "not json", '{"arteries": {}, "total": {}}'])
def test_a_file_that_is_not_a_report_is_one_line_exit_2(tmp_path, capsys, content):
    reference, broken = tmp_path / "scores.json", tmp_path / "broken.json"
    reference.write_text(json.dumps(REFERENCE), encoding="utf-8")
    broken.write_text(content, encoding="utf-8")
    assert compare_scores.main([str(reference), str(broken)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("compare_scores: error: ") and "broken.json" in error and "\n" not in error


def test_the_demo_ends_with_the_comparison_of_its_two_reports():
    last = (SCRIPTS / "demo.sh").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert "scripts/compare_scores.py" in last
    assert '"$out/scores.json" "$out/model_scores.json"' in last
