"""COCA non-gated scores.xlsx reading: LCA -> LM, totals checked against the per-vessel sum."""

import openpyxl
import pytest

from CACScoringLib.data.scores_xlsx import read_scores_xlsx
from CACScoringLib.errors import InputError


def write_xlsx(path, rows, header=("filename", "LCA", "LAD", "LCX", "RCA", "total")):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return path


def test_rows_are_read_and_sum_mismatch_flagged(tmp_path):
    path = write_xlsx(
        tmp_path / "scores.xlsx",
        [
            ("abc", 10, 20.5, 0, 5, 35.5),  # consistent
            (1234, 0, 0, 0, 0, 0),  # numeric filename
            ("bad", 1, 2, 3, 4, 100),  # 100 != 10
            ("round", 1.2, 2.2, 3.2, 4.2, 11),  # 10.8 vs 11: within the default tolerance
            (None, 1, 1, 1, 1, 4),  # no filename: ignored
            ("blank", None, 1, 1, 1, 3),
        ],
    )
    rows = read_scores_xlsx(path)
    assert [r.filename for r in rows] == ["abc", "1234", "bad", "round", "blank"]
    first = rows[0]
    assert first.agatston == {"LM": 10.0, "LAD": 20.5, "LCX": 0.0, "RCA": 5.0}
    assert first.total == 35.5 and first.problems == [] and first.row == 2
    assert rows[1].problems == []
    assert len(rows[2].problems) == 1 and "differs" in rows[2].problems[0] and "+90" in rows[2].problems[0]
    assert rows[3].problems == []
    assert rows[4].agatston["LM"] is None and "LCA is blank" in rows[4].problems[0]
    assert first.reference_scores() == {
        "LM": {"agatston": 10.0},
        "LAD": {"agatston": 20.5},
        "LCX": {"agatston": 0.0},
        "RCA": {"agatston": 5.0},
        "total": {"agatston": 35.5},
    }


def test_tolerance_is_configurable(tmp_path):
    path = write_xlsx(tmp_path / "scores.xlsx", [("x", 1, 1, 1, 1, 4.5)])
    assert read_scores_xlsx(path)[0].problems == []
    assert read_scores_xlsx(path, total_abs_tolerance=0.1, total_rel_tolerance=0.0)[0].problems


def test_headers_are_case_insensitive_and_missing_columns_named(tmp_path):
    path = write_xlsx(
        tmp_path / "a.xlsx", [("x", 1, 2, 3, 4, 10)], header=("Filename", "lca", "LAD", "LCX", "RCA", "Total")
    )
    assert read_scores_xlsx(path)[0].total == 10.0
    path = write_xlsx(
        tmp_path / "b.xlsx", [("x", 1, 2, 3, 10)], header=("filename", "LCA", "LAD", "RCA", "total")
    )
    with pytest.raises(InputError, match="LCX"):
        read_scores_xlsx(path)


def test_not_a_workbook_is_input_error(tmp_path):
    path = tmp_path / "scores.xlsx"
    path.write_text("not a zip", encoding="utf-8")
    with pytest.raises(InputError, match="xlsx"):
        read_scores_xlsx(path)
