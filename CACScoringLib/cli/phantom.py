"""`cacscoring phantom OUTDIR`: write synthetic thorax or calibration phantoms with their ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from . import COMMANDS


def add_clearance_arguments(parser: argparse.ArgumentParser) -> None:
    """The thorax generator's clearance options (also taken by the default model's evaluation scripts)."""
    from ..phantom.thorax import DEFAULT_BIFURCATION_CLEARANCE_MM, DEFAULT_DESCENDING_AORTA_CLEARANCE_MM

    parser.add_argument(
        "--bifurcation-clearance-mm",
        type=float,
        default=DEFAULT_BIFURCATION_CLEARANCE_MM,
        metavar="MM",
        help=f"thorax: LAD/LCX plaques at least this far from the other branch (default {DEFAULT_BIFURCATION_CLEARANCE_MM:g})",
    )
    parser.add_argument(
        "--descending-aorta-clearance-mm",
        type=lambda text: None if text.lower() == "none" else float(text),
        default=DEFAULT_DESCENDING_AORTA_CLEARANCE_MM,
        metavar="MM",
        help="thorax: the descending aorta's wall this far outside the heart's epicardial fat; 'none' leaves it"
        f" where drawn, as before the option (default {DEFAULT_DESCENDING_AORTA_CLEARANCE_MM:g})",
    )


def clearance_options(args: argparse.Namespace) -> dict:
    """make_thorax_phantom keyword arguments from add_clearance_arguments' options."""
    if args.bifurcation_clearance_mm < 0:
        raise InputError(f"--bifurcation-clearance-mm must be >= 0, not {args.bifurcation_clearance_mm:g}")
    return {
        "bifurcation_clearance_mm": args.bifurcation_clearance_mm,
        "descending_aorta_clearance_mm": args.descending_aorta_clearance_mm,
    }


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help=COMMANDS["phantom"],
        description=(
            "Write a synthetic CT phantom, its label map and truth.json (ground truth and implied scores). "
            "With --count 1 the files go straight into OUTDIR (thorax_ct.nii.gz, thorax_labels.nii.gz, ...); "
            "with --count N into OUTDIR/case_000 ... case_<N-1> with seeds SEED ... SEED+N-1."
        ),
    )
    parser.add_argument("outdir", metavar="OUTDIR", type=Path, help="output folder (created if missing)")
    parser.add_argument(
        "--kind", choices=("thorax", "calibration"), default="thorax", help="phantom (default thorax)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the first case (default 0)")
    parser.add_argument("--count", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument(
        "--format", choices=("nifti", "dicom", "both"), default="nifti", help="CT file format"
    )
    parser.add_argument(
        "--coca-xml", action="store_true", help="also write the labels as COCA-style calcium XML"
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=None,
        metavar="HU",
        help="noise SD in HU (default: thorax draws 8-22 HU per case, calibration 10 HU)",
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        default=None,
        help="thorax grid size in voxels (default 48 256 256)",
    )
    add_clearance_arguments(parser)
    parser.set_defaults(func=run)


def _summary_line(name: str, truth_scores: dict) -> str:
    total = truth_scores["total"]
    arteries = "  ".join(f"{key} {score['agatston']:.1f}" for key, score in truth_scores["arteries"].items())
    return (
        f"{name}: Agatston {total['agatston']:.1f} ({arteries}), volume {total['volume_mm3']:.1f} mm³, "
        f"{total['lesions']} lesions, risk {truth_scores['risk_category']}"
    )


def run(args: argparse.Namespace) -> int:
    from .. import phantom

    if args.count < 1:
        raise InputError(f"--count must be at least 1, not {args.count}")
    if args.noise is not None and args.noise < 0:
        raise InputError(f"--noise must be >= 0 HU, not {args.noise}")
    if args.shape is not None:
        if args.kind != "thorax":
            raise InputError("--shape applies to the thorax phantom; the calibration phantom's grid is fixed")
        if min(args.shape) < 8:
            raise InputError(
                f"--shape needs at least 8 voxels per axis, not {' '.join(map(str, args.shape))}"
            )
    for index in range(args.count):
        seed = args.seed + index
        folder = args.outdir if args.count == 1 else args.outdir / f"case_{index:03d}"
        if args.kind == "thorax":
            options = {"seed": seed, "noise_hu": args.noise, **clearance_options(args)}
            if args.shape is not None:
                options["shape"] = tuple(args.shape)
            case = phantom.make_thorax_phantom(**options)
            files = phantom.write_thorax_case(case, folder, args.format, args.coca_xml)
            print(_summary_line(f"{folder} (seed {seed})", case.truth()["scores"]))
        else:
            options = {"seed": seed} if args.noise is None else {"seed": seed, "noise_hu": args.noise}
            case = phantom.make_calibration_phantom(**options)
            files = phantom.write_calibration_case(case, folder, args.format, args.coca_xml, seed=seed)
            print(f"{folder} (seed {seed}): calibration phantom, 9 inserts, truth in {files['truth'].name}")
    return 0
