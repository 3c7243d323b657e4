"""`cacscoring batch INPUT OUTPUT`: score every CT in a folder; one failed case does not stop the rest.

Nothing is lost: each result is written whole (temporary file, then rename), a lock keeps a second run out
of the folder, results from the same input and settings are kept (a rerun resumes), others only go with
--overwrite, and summary.csv is rebuilt from the results on disk, marking a cut-short run's cases pending.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from ..batch import OutputLock, atomic_write_text, find_cases, fingerprint, labels_for, prepare_output_folder
from ..errors import InputError
from ..labels import ARTERIES
from . import COMMANDS
from .score import add_model_arguments, add_scoring_arguments, input_section, score_ct

SUMMARY_COLUMNS = ("case", "status", "message", *ARTERIES, "total_agatston", "total_volume_mm3", "total_mass_mg",
                   "lesions", "risk_category", "cac_drs", "blood_pool_hu", "seconds")
RUN_FILE = "batch_run.json"
# Options that do not change a case's scores (the label map itself is fingerprinted per case).
NOT_SETTINGS = frozenset({"input", "output", "labels", "overwrite", "quiet", "func", "command"})
PENDING = {"status": "pending", "message": f"not scored: the run was cut short or is still running (see {RUN_FILE})"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        help=COMMANDS["batch"],
        description="Score each case in INPUT: image files (.nii, .nii.gz, .nrrd, ...) and subfolders (one "
        "DICOM series each). Writes OUTPUT/<case>.json and OUTPUT/summary.csv. A rerun keeps the results of "
        "unchanged cases and scores the rest. Exit 0 when every case was scored, 1 when some failed (the "
        "summary says why), 2 on bad input.",
    )
    parser.add_argument("input", type=Path, help="folder of cases (or a single CT)")
    parser.add_argument("output", type=Path, help="folder for the per-case JSON and summary.csv")
    parser.add_argument("--labels", type=Path,
                        help="folder with <case>.nii.gz label maps to score instead of segmenting")
    parser.add_argument("--overwrite", action="store_true",
                        help="rescore and replace results made from other input or settings (kept otherwise)")
    add_scoring_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(func=run, quiet=True)


def run(args) -> int:
    cases = find_cases(args.input)
    if args.output.resolve() == args.input.resolve():
        raise InputError("the output folder must differ from the input folder")
    prepare_output_folder(args.output)
    with OutputLock(args.output):
        return _run_locked(args, cases)


def settings_of(args) -> dict:
    """The options that decide a case's scores, as JSON values (paths resolved)."""
    def plain(value):
        if isinstance(value, Path):
            return str(value.resolve())
        return [plain(v) for v in value] if isinstance(value, list | tuple) else value

    return {key: plain(value) for key, value in sorted(vars(args).items()) if key not in NOT_SETTINGS}


def _read_report(path: Path) -> dict | None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) else None


def _same_origin(report: dict | None, origin: dict | None) -> bool:
    batch = report.get("batch") if report else None
    return origin is not None and isinstance(batch, dict) and all(batch.get(k) == v for k, v in origin.items())


def row_from_report(case: str, report: dict) -> dict:
    arteries, total = report["arteries"], report["total"]
    return {
        "case": case,
        "status": "ok",
        "message": "; ".join(report.get("warnings", [])),
        **{key: round(arteries[key]["agatston"], 2) for key in ARTERIES},
        "total_agatston": round(total["agatston"], 2),
        "total_volume_mm3": round(total["volume_mm3"], 2),
        "total_mass_mg": "" if total.get("mass_mg") is None else round(total["mass_mg"], 2),
        "lesions": total["lesions"],
        "risk_category": report["risk_category"],
        "cac_drs": report["cac_drs"],
        "blood_pool_hu": _blood_pool(report.get("contrast")),
        "seconds": report.get("batch", {}).get("seconds", ""),
    }


def _blood_pool(contrast: dict | None) -> str | float:
    return "" if not contrast or contrast.get("blood_pool_hu") is None else round(contrast["blood_pool_hu"], 1)


def _plan(args, cases, settings):
    """(cases to score with their labels and origin, cases kept from earlier runs); InputError on conflicts."""
    todo, kept, conflicts = [], [], []
    for case, path in cases:
        try:
            labels_path = labels_for(case, args.labels, single=len(cases) == 1)
            origin = {"input": fingerprint(path), "labels": fingerprint(labels_path), "settings": settings}
        except (InputError, OSError) as error:  # reported as this case's failure when it is scored
            labels_path, origin = error, None
        result = args.output / f"{case}.json"
        if result.exists() and not args.overwrite:
            if _same_origin(_read_report(result), origin):
                kept.append(case)
                continue
            conflicts.append(result.name)
        todo.append((case, path, labels_path, origin))
    if conflicts:
        shown = ", ".join(conflicts[:5]) + (f" (+{len(conflicts) - 5} more)" if len(conflicts) > 5 else "")
        raise InputError(
            f"{args.output} already holds results made from other input or settings, or by another program: "
            f"{shown}; give --overwrite to replace them, or choose another output folder"
        )
    return todo, kept


def _write_summary(output: Path, rows: list[dict]) -> Path:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(output / "summary.csv", text.getvalue())
    return output / "summary.csv"


def _write_run(output: Path, run: dict) -> None:
    atomic_write_text(output / RUN_FILE, json.dumps(run, indent=2) + "\n")


def _score_case(args, case, path, labels_path, origin) -> dict:
    """Score one case and write its result whole; the run record of its status."""
    from ..io import read_ct, read_labels

    started = time.perf_counter()
    try:
        if isinstance(labels_path, Exception):
            raise labels_path
        ct = read_ct(path)
        labels = None if labels_path is None else read_labels(labels_path, ct)
        _, report = score_ct(ct, labels, args)
        seconds = round(time.perf_counter() - started, 2)
        report = {"input": input_section(path, labels_path, ct), **report, "batch": {**origin, "seconds": seconds}}
        atomic_write_text(args.output / f"{case}.json", json.dumps(report, indent=2) + "\n")
        return {"status": "ok", "seconds": seconds}
    except InputError as error:
        message = str(error)
    except Exception as error:  # one broken case must not stop the batch; the summary names it
        message = f"{type(error).__name__}: {error}"
    tqdm.write(f"{case}: failed: {message}")
    return {"status": "failed", "message": message, "seconds": round(time.perf_counter() - started, 2)}


def _summary_rows(output: Path, names: list[str], run: dict, read: dict[str, dict]) -> list[dict]:
    """One row per case, from the results on disk (each read once into `read`); failed ones from the run."""
    rows = []
    for case in names:
        record = run["cases"].get(case)
        if record and record["status"] == "ok" and case not in read:
            try:
                read[case] = row_from_report(case, _read_report(output / f"{case}.json"))
            except (KeyError, TypeError, AttributeError):  # removed or edited since: reported as failed below
                pass
        if case in read:
            rows.append(read[case])
        elif record is None:
            rows.append({"case": case, **PENDING})
        else:
            rows.append({"case": case, "status": "failed", "seconds": record.get("seconds", ""),
                         "message": record.get("message") or f"{case}.json is missing or unreadable"})
    return rows


def _run_locked(args, cases) -> int:
    settings = settings_of(args)
    todo, kept = _plan(args, cases, settings)
    names = [case for case, _ in cases]
    run = {"complete": False, "pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(),
           "cases": {case: {"status": "ok", "kept": True} for case in kept}}
    _write_run(args.output, run)
    read: dict[str, dict] = {}
    _write_summary(args.output, _summary_rows(args.output, names, run, read))
    progress = tqdm(todo, desc="scoring", unit="case")
    for case, path, labels_path, origin in progress:
        progress.set_postfix_str(case)
        read.pop(case, None)
        run["cases"][case] = _score_case(args, case, path, labels_path, origin)
        _write_run(args.output, run)
        _write_summary(args.output, _summary_rows(args.output, names, run, read))
    run["complete"] = True
    run["finished"] = datetime.now(timezone.utc).isoformat()
    rows = _summary_rows(args.output, names, run, {})  # the final summary: every result read from disk again
    summary = _write_summary(args.output, rows)
    _write_run(args.output, run)
    failed = sum(row["status"] != "ok" for row in rows)
    note = f" ({len(kept)} kept from an earlier run)" if kept else ""
    print(f"{len(rows) - failed} of {len(rows)} cases scored{note}; summary: {summary}")
    return 1 if failed else 0
