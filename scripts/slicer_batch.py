"""Score one CT or a folder of CTs with the CACScoring Slicer module logic, without the GUI.

    Slicer --no-main-window --python-script scripts/slicer_batch.py --input DIR_OR_FILE --output DIR
    python scripts/slicer_batch.py --input DIR_OR_FILE --output DIR      (plain Python with slicer-core)

A folder holds cases as CACScoringLib.batch.find_cases finds them. Each case gets <output>/<case>/ with the report (CSV, JSON,
HTML with key images) and <case>.seg.nrrd; <output>/summary.csv lists every case, failed ones with the
reason and cases not reached yet as pending (it is rewritten whole after each case). A failing case does not
stop the others; the exit code is 1 when any case failed. As `cacscoring batch`, it loses nothing: a lock keeps
a second run out of the output folder, and cases that already have a report there are refused before anything
is written unless --overwrite.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "CACScoring"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

SUMMARY_COLUMNS = ("case", "status", "message", "LM", "LAD", "LCX", "RCA", "total_agatston", "total_volume_mm3",
                   "lesions", "risk_category", "cac_drs", "report", "seconds")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slicer_batch.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="a CT (file or DICOM folder) or a folder of cases")
    parser.add_argument("--output", required=True, type=Path, help="folder for reports and summary.csv")
    parser.add_argument("--model", default="", help="registry id or model folder (default: the registry default)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--preset", default="standard", help="scoring preset (standard, agatston1990, ...)")
    parser.add_argument("--labels", type=Path,
                        help="score existing label maps instead of segmenting: a file for one CT, or a folder "
                             "with <case>.nii.gz (or any image suffix) per case")
    parser.add_argument("--overwrite", action="store_true", help="replace the reports of cases scored before")
    return parser.parse_args(argv)


def write_summary(path: Path, rows: list[dict]) -> None:
    from CACScoringLib.batch import atomic_write_text

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def score_case(core, case: str, path: Path, labels_path: Path | None, options, output: Path) -> dict:
    from CACScoringSlicerLib.geometry import add_volume_node

    from CACScoringLib.io import read_ct, read_labels

    ct = read_ct(path)
    volume_node = add_volume_node(core.scene, ct, case)
    segmentation_node = None
    try:
        if labels_path is None:  # no per-step progress: one line per case is printed when it ends
            segmentation_node, result = core.process(volume_node, None, options)
        else:
            labels = read_labels(labels_path, ct)
            segmentation_node = core.apply_inference_labels(volume_node, labels)
            result = core.start_live_scoring(volume_node, segmentation_node, options.scoring_params())
        paths = core.export(output / case, case)
        return {
            **{key: f"{result.arteries[key].agatston:.2f}" for key in ("LM", "LAD", "LCX", "RCA")},
            "total_agatston": f"{result.total.agatston:.2f}",
            "total_volume_mm3": f"{result.total.volume_mm3:.2f}",
            "lesions": result.total.lesions,
            "risk_category": result.risk_category,
            "cac_drs": result.cac_drs,
            "report": str(paths["html"]),
            "message": "; ".join(result.warnings),
        }
    finally:
        core.stop_live_scoring()
        for node in (segmentation_node, volume_node):
            if node is not None:
                core.scene.RemoveNode(node)


def run(argv: list[str]) -> int:
    import slicer
    from CACScoringSlicerLib.logic import CACScoringSceneLogic, ScoringOptions

    from CACScoringLib.batch import OutputLock, find_cases, prepare_output_folder
    from CACScoringLib.errors import InputError

    args = parse_args(argv)
    if hasattr(slicer, "mrmlScene"):  # inside the Slicer application
        scene = slicer.mrmlScene
    else:
        from CACScoringSlicerLib.standalone import create_standalone_scene

        scene = create_standalone_scene().scene
    core = CACScoringSceneLogic(scene)
    options = ScoringOptions(model=args.model, device=args.device, preset=args.preset)
    try:
        options.scoring_params()
        cases = find_cases(args.input)
        prepare_output_folder(args.output)
        scored_before = [case for case, _ in cases if (args.output / case).exists()]
        if scored_before and not args.overwrite:
            raise InputError(f"{args.output} already holds reports of {', '.join(scored_before[:5])}"
                             f"{' and more' if len(scored_before) > 5 else ''}; give --overwrite to replace them, "
                             "or choose another output folder")
        with OutputLock(args.output):
            return score_cases(core, cases, args, options)
    except InputError as error:
        print(f"slicer_batch: error: {error}", file=sys.stderr)
        return 2


def score_cases(core, cases, args, options) -> int:
    from CACScoringLib.batch import labels_for
    from CACScoringLib.errors import InputError

    summary = args.output / "summary.csv"
    rows = [{"case": case, "status": "pending", "message": "not scored yet (the run was cut short or is running)"}
            for case, _ in cases]
    write_summary(summary, rows)
    for number, (case, path) in enumerate(cases, start=1):
        started = time.perf_counter()
        try:
            labels_path = labels_for(case, args.labels, single=len(cases) == 1)
            row = {"case": case, "status": "ok", **score_case(core, case, path, labels_path, options, args.output)}
        except InputError as error:
            row = {"case": case, "status": "failed", "message": str(error)}
        except Exception as error:  # an unexpected failure in one case must not stop the batch
            traceback.print_exc()
            row = {"case": case, "status": "failed", "message": f"{type(error).__name__}: {error}"}
        row["seconds"] = f"{time.perf_counter() - started:.1f}"
        print(f"[{number}/{len(cases)}] {case}: {row['status']} {row.get('total_agatston', '')} "
              f"({row['seconds']} s) {row.get('message', '')}".rstrip(), flush=True)
        rows[number - 1] = row
        write_summary(summary, rows)
    failed = sum(row["status"] != "ok" for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} cases scored; summary: {summary}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    exit_code = run(sys.argv[1:])
    import slicer

    if hasattr(slicer, "app"):
        slicer.util.exit(exit_code)
    else:
        sys.exit(exit_code)
