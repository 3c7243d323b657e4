"""`cacscoring batch INPUT OUTPUT`: score every CT in a folder; one failed case does not stop the rest.

Nothing is lost: each result is written whole (temporary file, then rename), a lock keeps a second run out
of the folder, results from the same input and settings are kept (a rerun resumes), others only go with
--overwrite, and summary.csv is rebuilt from the results on disk, marking a cut-short run's cases pending.

Cohorts: launched by torchrun (`torchrun --nproc-per-node GPUS -m CACScoringLib batch ...`, or `srun torchrun`
across nodes) each rank scores every WORLD_SIZE-th case on its own GPU, with the model loaded once and the next
case read while the current one is scored; rank 0 holds the lock, plans the run and merges the ranks' records
into batch_run.json at the end. gloo carries the few small messages between ranks, whatever scores the cases.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tqdm import tqdm

from ..batch import OutputLock, atomic_write_text, find_cases, fingerprint, labels_for, prepare_output_folder
from ..errors import InputError
from ..labels import ARTERIES
from . import COMMANDS
from .score import add_model_arguments, add_scoring_arguments, input_section, model_spec, score_ct

SUMMARY_COLUMNS = ("case", "status", "message", *ARTERIES, "total_agatston", "total_volume_mm3", "total_mass_mg",
                   "lesions", "risk_category", "cac_drs", "blood_pool_hu", "seconds")
RUN_FILE = "batch_run.json"
RANK_RUN_FILE = "batch_run.rank{rank}.json"  # each torchrun rank's record while it runs; merged into RUN_FILE
SUMMARY_SHARE = 0.1  # on large cohorts rewriting summary.csv may take at most this share of the run
ALWAYS_SUMMARISE = 500  # up to this many cases it is rewritten after each one (milliseconds)
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


class Ranks:
    """This process's place among torchrun's processes: rank 0 of 1 when it runs alone."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._dist = None
        if self.world > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                # Ranks done with their share wait at the final barrier for the slowest: hours on a cohort, far
                # past gloo's 30-minute default.
                dist.init_process_group("gloo", timeout=timedelta(days=7))
            self._dist = dist
            if torch.cuda.is_available():  # one GPU per rank on each node: "cuda" and "auto" mean that one
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())

    def share(self, value):
        """Rank 0's value, on every rank."""
        if self._dist is None:
            return value
        box = [value]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self._dist is not None:
            self._dist.barrier()

    def close(self) -> None:
        if self._dist is not None and self._dist.is_initialized():
            self._dist.destroy_process_group()


def run(args) -> int:
    ranks = Ranks()
    try:
        with contextlib.ExitStack() as stack:
            plan = ranks.share(_prepare(args, stack) if ranks.rank == 0 else None)
            if "error" in plan:
                raise InputError(plan["error"])
            return _run_shard(args, plan, ranks)
    finally:
        ranks.close()


def _prepare(args, stack: contextlib.ExitStack) -> dict:
    """Rank 0: check the folders, take the lock (released by `stack`), plan the run; an error as a message,
    which every rank then raises."""
    try:
        cases = find_cases(args.input)
        if args.output.resolve() == args.input.resolve():
            raise InputError("the output folder must differ from the input folder")
        prepare_output_folder(args.output)
        stack.enter_context(OutputLock(args.output))
        todo, kept = _plan(args, cases, settings_of(args))
    except InputError as error:
        return {"error": str(error)}
    return {"names": [case for case, _ in cases], "todo": todo, "kept": kept}


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


def _write_run(path: Path, run: dict) -> None:
    atomic_write_text(path, json.dumps(run, indent=2) + "\n")


def _read_case(path, labels_path):
    """The CT and its label map (None: segment it), read while the previous case is scored."""
    from ..io import read_ct, read_labels

    if isinstance(labels_path, Exception):
        raise labels_path
    ct = read_ct(path)
    return ct, None if labels_path is None else read_labels(labels_path, ct)


def _load_models_once(args):
    """The models, loaded once for the whole run (None with --labels); a failure is each case's to report."""
    if args.labels is not None:
        return None
    from ..inference.pipeline import load_models
    from ..models.package import resolve_device

    try:
        return load_models(model_spec(args), resolve_device("cpu" if args.backend == "onnx" else args.device))
    except InputError as error:
        return error


def _score_case(args, case, path, labels_path, origin, reading, packages) -> dict:
    """Score one case and write its result whole; the run record of its status. `reading`: the future of
    _read_case."""
    started = time.perf_counter()
    try:
        if isinstance(packages, Exception):
            raise packages
        ct, labels = reading.result()
        _, report = score_ct(ct, labels, args, packages)
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


class _Summary:
    """summary.csv kept current: after every case up to ALWAYS_SUMMARISE cases; beyond, while its upkeep stays
    under SUMMARY_SHARE of the run (rewritten once the time since the last rewrite is long enough against what
    that rewrite took), as it grows with the cohort."""

    def __init__(self, output: Path, names: list[str]):
        self.output, self.names, self.read = output, names, {}
        self._ready_at = 0.0

    def write(self, run: dict, force: bool = False) -> list[dict]:
        now = time.perf_counter()
        if not force and len(self.names) > ALWAYS_SUMMARISE and now < self._ready_at:
            return []
        rows = _summary_rows(self.output, self.names, run, self.read)
        _write_summary(self.output, rows)
        self._ready_at = now + (time.perf_counter() - now) / SUMMARY_SHARE
        return rows


def _other_ranks_cases(output: Path, ranks: Ranks) -> dict:
    cases = {}
    for rank in range(ranks.world):
        record = _read_report(output / RANK_RUN_FILE.format(rank=rank)) if rank != ranks.rank else None
        if record and isinstance(record.get("cases"), dict):
            cases.update(record["cases"])
    return cases


def _run_shard(args, plan: dict, ranks: Ranks) -> int:
    names, todo, kept = plan["names"], plan["todo"][ranks.rank :: ranks.world], plan["kept"]
    alone = ranks.world == 1
    record = args.output / (RUN_FILE if alone else RANK_RUN_FILE.format(rank=ranks.rank))
    run = {"complete": False, "pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(),
           "cases": {case: {"status": "ok", "kept": True} for case in kept} if ranks.rank == 0 else {}}
    if not alone:
        run |= {"rank": ranks.rank, "world_size": ranks.world}
    _write_run(record, run)
    summary = _Summary(args.output, names)

    def view() -> dict:  # what the summary shows mid-run: every rank's cases as far as known
        return run if alone else {"cases": _other_ranks_cases(args.output, ranks) | run["cases"]}

    if ranks.rank == 0:
        summary.write(view(), force=True)
    packages = _load_models_once(args) if todo else None
    progress = tqdm(todo, desc="scoring" if alone else f"rank {ranks.rank} scoring", unit="case")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as reader:
        upcoming = reader.submit(_read_case, *todo[0][1:3]) if todo else None
        for index, (case, path, labels_path, origin) in enumerate(progress):
            progress.set_postfix_str(case)
            reading = upcoming
            if index + 1 < len(todo):
                upcoming = reader.submit(_read_case, *todo[index + 1][1:3])
            summary.read.pop(case, None)
            run["cases"][case] = _score_case(args, case, path, labels_path, origin, reading, packages)
            del reading
            _write_run(record, run)
            summary.write(view())
    ranks.barrier()
    failed = None
    if ranks.rank == 0:
        failed = _finish(args, names, run, kept, ranks)
    failed = ranks.share(failed)
    return 1 if failed else 0


def _finish(args, names: list[str], run: dict, kept: list[str], ranks: Ranks) -> int:
    """Rank 0, once every rank is done: one run record and the final summary, every result read from disk."""
    if ranks.world > 1:
        run = {key: value for key, value in run.items() if key not in ("rank", "world_size")}
        run["cases"] = _other_ranks_cases(args.output, ranks) | run["cases"]
        run["world_size"] = ranks.world
    run["complete"] = True
    run["finished"] = datetime.now(timezone.utc).isoformat()
    rows = _summary_rows(args.output, names, run, {})
    summary = _write_summary(args.output, rows)
    _write_run(args.output / RUN_FILE, run)
    for rank in range(ranks.world if ranks.world > 1 else 0):
        (args.output / RANK_RUN_FILE.format(rank=rank)).unlink(missing_ok=True)
    failed = sum(row["status"] != "ok" for row in rows)
    note = f" ({len(kept)} kept from an earlier run)" if kept else ""
    ranks_note = f" by {ranks.world} processes" if ranks.world > 1 else ""
    print(f"{len(rows) - failed} of {len(rows)} cases scored{note}{ranks_note}; summary: {summary}")
    return failed
