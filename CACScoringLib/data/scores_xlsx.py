"""COCA non-gated per-vessel Agatston scores (scores.xlsx: filename, LCA, LAD, LCX, RCA, total)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import openpyxl

from ..errors import InputError
from ..labels import ARTERIES

# scores.xlsx column -> artery key; COCA calls the left main "LCA".
COLUMN_TO_ARTERY = {"LCA": "LM", "LAD": "LAD", "LCX": "LCX", "RCA": "RCA"}
REQUIRED_COLUMNS = ("filename", *COLUMN_TO_ARTERY, "total")


@dataclass
class ScoreRow:
    filename: str
    row: int  # 1-based spreadsheet row, for messages
    agatston: dict[str, float | None]  # artery key -> score (None when the cell is blank or not a number)
    total: float | None
    problems: list[str] = field(default_factory=list)  # total/sum disagreement, blank or bad cells

    def reference_scores(self) -> dict[str, dict[str, float]]:
        """Manifest `reference_scores` (Agatston only: the non-gated set gives no volumes)."""
        scores = {key: {"agatston": value} for key, value in self.agatston.items() if value is not None}
        if self.total is not None:
            scores["total"] = {"agatston": self.total}
        return scores


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _filename(value) -> str:
    # Excel stores numeric ids as floats (1234.0): keep them as written.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _header_map(header: tuple, path: Path) -> dict[str, int]:
    names = {str(cell).strip().lower(): index for index, cell in enumerate(header) if cell is not None}
    missing = [column for column in REQUIRED_COLUMNS if column.lower() not in names]
    if missing:
        raise InputError(
            f"{path}: the first row lacks the column(s) {', '.join(missing)}; "
            f"a COCA scores.xlsx has {', '.join(REQUIRED_COLUMNS)}"
        )
    return {column: names[column.lower()] for column in REQUIRED_COLUMNS}


def read_scores_xlsx(
    path: str | Path, total_abs_tolerance: float = 1.0, total_rel_tolerance: float = 0.01
) -> list[ScoreRow]:
    """Rows of a COCA scores.xlsx (first sheet, header in row 1).

    A row's `problems` says when its total differs from LCA+LAD+LCX+RCA by more than
    `total_abs_tolerance + total_rel_tolerance * |total|` (Agatston units), or when a cell is blank or not a number.
    Rows with an empty filename are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scores file {path} does not exist; pass the COCA non-gated scores.xlsx")
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several unrelated types for a damaged or non-xlsx file
        raise InputError(
            f"{path} cannot be read as an .xlsx workbook ({error}); pass the COCA scores.xlsx"
        ) from error
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise InputError(f"{path} is empty; pass the COCA non-gated scores.xlsx")
        columns = _header_map(header, path)
        result = []
        for row_number, values in enumerate(rows, start=2):
            cells = {
                column: values[index] if index < len(values) else None for column, index in columns.items()
            }
            if cells["filename"] is None or not str(cells["filename"]).strip():
                continue
            score_row = ScoreRow(
                filename=_filename(cells["filename"]),
                row=row_number,
                agatston={COLUMN_TO_ARTERY[c]: _number(cells[c]) for c in COLUMN_TO_ARTERY},
                total=_number(cells["total"]),
            )
            for column in (*COLUMN_TO_ARTERY, "total"):
                if _number(cells[column]) is None:
                    score_row.problems.append(f"{column} is blank or not a number ({cells[column]!r})")
            arteries = [score_row.agatston[key] for key in ARTERIES]
            if score_row.total is not None and None not in arteries:
                difference = score_row.total - sum(arteries)
                if abs(difference) > total_abs_tolerance + total_rel_tolerance * abs(score_row.total):
                    score_row.problems.append(
                        f"total {score_row.total:g} differs from LCA+LAD+LCX+RCA {sum(arteries):g} by {difference:+g}"
                    )
            result.append(score_row)
        return result
    finally:
        workbook.close()
