"""`cacscoring import-folder FOLDER OUTPUT`: image/label NIfTI pairs (nnU-Net raw or images/+labels/)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..scoring import PRESETS, preset
from . import COMMANDS
from .import_coca import print_summary


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-folder",
        help=COMMANDS["import-folder"],
        description="FOLDER holds imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz (nnU-Net raw, with an "
        "optional dataset.json whose label names are mapped onto LM/LAD/LCX/RCA) or images/ + labels/ with "
        "the same file names. Each pair's grid and label values are checked; writes images/, labels/, "
        "manifest.json and report.json.",
    )
    parser.add_argument("folder", type=Path, help="dataset folder")
    parser.add_argument("output", type=Path, help="training folder to write")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="standard",
        help="scoring convention of the reference scores",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..data.folder import import_folder

    report = import_folder(args.folder, args.output, preset(args.preset), progress=not args.no_progress)
    print_summary(report, args.output)
    if report["summary"]["imported"] == 0:
        raise InputError(f"no case was imported; the reasons are in {args.output / 'report.json'}")
    return 0
