"""`cacscoring import-coca ROOT OUTPUT`: the Stanford COCA set (gated or non-gated) into a training folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..scoring import PRESETS, preset
from . import COMMANDS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-coca",
        help=COMMANDS["import-coca"],
        description="Gated part: DICOM series + calcium XML per patient become image/label NIfTI pairs with "
        "per-artery reference scores. Non-gated part: DICOM series + scores.xlsx become image-only cases "
        "with the spreadsheet's per-vessel Agatston scores. Writes images/, labels/, manifest.json and "
        "report.json (what was imported, skipped and flagged, per patient).",
    )
    parser.add_argument(
        "root", type=Path, help="COCA download (holding Gated_release_final/ for --part gated)"
    )
    parser.add_argument("output", type=Path, help="training folder to write")
    parser.add_argument("--part", choices=("gated", "nongated"), default="gated", help="which part to import")
    parser.add_argument("--patients", nargs="+", metavar="ID", help="only these patient ids (default: all)")
    parser.add_argument(
        "--missing-xml-as-negative",
        action="store_true",
        help="gated: import a patient without calcium XML as calcium-free (default: skip it)",
    )
    parser.add_argument(
        "--area-tolerance",
        type=float,
        default=0.1,
        help="gated: flag ROIs whose pixel count differs from Area by more than this fraction beyond the "
        "outline's discretisation error (default 0.1)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="standard",
        help="gated: scoring convention of the reference scores",
    )
    parser.add_argument(
        "--scores", type=Path, help="non-gated: scores.xlsx (default: the first one under ROOT)"
    )
    parser.add_argument(
        "--total-tolerance",
        type=float,
        default=1.0,
        help="non-gated: flag rows whose total differs from the vessel sum by more than this plus 1%% (default 1)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..data.coca import import_coca_gated, import_coca_nongated

    if args.part == "gated":
        report = import_coca_gated(
            args.root,
            args.output,
            patients=args.patients,
            missing_xml_as_negative=args.missing_xml_as_negative,
            area_rel_tolerance=args.area_tolerance,
            scoring_params=preset(args.preset),
            progress=not args.no_progress,
        )
    else:
        report = import_coca_nongated(
            args.root,
            args.output,
            scores=args.scores,
            patients=args.patients,
            total_abs_tolerance=args.total_tolerance,
            progress=not args.no_progress,
        )
    print_summary(report, args.output)
    if report["summary"]["imported"] == 0:
        raise InputError(f"no patient was imported; the reasons are in {args.output / 'report.json'}")
    return 0


def print_summary(report: dict, output: Path) -> None:
    summary = report["summary"]
    print(
        f"{report['source']}: "
        + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in summary.items())
    )
    entries = report.get("patients") or report.get("cases") or []
    skipped = [entry for entry in entries if entry["status"] == "skipped"]
    for entry in skipped[:10]:
        print(f"  skipped {entry['id']}: {entry['reason']}")
    if len(skipped) > 10:
        print(f"  ... and {len(skipped) - 10} more skipped")
    print(f"manifest: {output / 'manifest.json'}\nreport:   {output / 'report.json'}")
