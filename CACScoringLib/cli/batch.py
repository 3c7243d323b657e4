"""`cacscoring batch INPUT OUTPUT`: score every CT in a folder; one failed case does not stop the rest."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from tqdm import tqdm

from ..batch import find_cases, labels_for
from ..errors import InputError
from ..labels import ARTERIES
from .score import add_model_arguments, add_scoring_arguments, input_section, score_ct

SUMMARY_COLUMNS = ("case", "status", "message", *ARTERIES, "total_agatston", "total_volume_mm3", "total_mass_mg",
                   "lesions", "risk_category", "cac_drs", "seconds")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="score every CT in a folder (summary CSV)",
        description="Score each case in INPUT: image files (.nii, .nii.gz, .nrrd, ...) and subfolders (one "
        "DICOM series each). Writes OUTPUT/<case>.json and OUTPUT/summary.csv. Exit 0 when every case was "
        "scored, 1 when some failed (the summary says why), 2 on bad input.",
    )
    parser.add_argument("input", type=Path, help="folder of cases (or a single CT)")
    parser.add_argument("output", type=Path, help="folder for the per-case JSON and summary.csv")
    parser.add_argument("--labels", type=Path,
                        help="folder with <case>.nii.gz label maps to score instead of segmenting")
    add_scoring_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(func=run, quiet=True)


def run(args) -> int:
    from ..io import read_ct, read_labels

    cases = find_cases(args.input)
    if args.output.resolve() == args.input.resolve():
        raise InputError("the output folder must differ from the input folder")
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    progress = tqdm(cases, desc="scoring", unit="case")
    for case, path in progress:
        progress.set_postfix_str(case)
        started = time.perf_counter()
        row = {"case": case}
        try:
            ct = read_ct(path)
            labels_path = labels_for(case, args.labels, single=len(cases) == 1)
            labels = None if labels_path is None else read_labels(labels_path, ct)
            result, report = score_ct(ct, labels, args)
            report = {"input": input_section(path, labels_path, ct), **report}
            (args.output / f"{case}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            row.update(
                status="ok",
                message="; ".join(result.warnings),
                **{key: round(result.arteries[key].agatston, 2) for key in ARTERIES},
                total_agatston=round(result.total.agatston, 2),
                total_volume_mm3=round(result.total.volume_mm3, 2),
                total_mass_mg="" if result.total.mass_mg is None else round(result.total.mass_mg, 2),
                lesions=result.total.lesions,
                risk_category=result.risk_category,
                cac_drs=result.cac_drs,
            )
        except InputError as error:
            row.update(status="failed", message=str(error))
        except Exception as error:  # one broken case must not stop the batch; the summary names it
            row.update(status="failed", message=f"{type(error).__name__}: {error}")
        row["seconds"] = round(time.perf_counter() - started, 2)
        if row["status"] != "ok":
            tqdm.write(f"{case}: failed: {row['message']}")
        rows.append(row)

    summary = args.output / "summary.csv"
    with open(summary, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(row["status"] != "ok" for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} cases scored; summary: {summary}")
    return 1 if failed else 0
