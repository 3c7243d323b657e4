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
    realism = parser.add_argument_group(
        "realistic thorax (docs/phantoms.md; off by default, which keeps the phantoms of earlier versions)"
    )
    realism.add_argument(
        "--preset", choices=("realchest",), default=None,
        help="realchest: random field of view, distractors and acquisition (the options below override it)",
    )  # fmt: skip
    realism.add_argument(
        "--field-of-view", choices=("cardiac", "chest", "random"), default=None,
        help="cardiac (default) or chest: neck to upper abdomen with airways, aortic arch and neck vessels",
    )  # fmt: skip
    realism.add_argument(
        "--distractors", default=None, metavar="all|KIND=N,...",
        help="non-coronary bright structures, all labelled 0: 'all' draws kinds and counts at random, or e.g."
        " aortic_valve=2,stent=1 (kinds: see docs/phantoms.md)",
    )
    realism.add_argument(
        "--acquisition", default=None, metavar="random|KEY=VALUE,...",
        help="random scanner settings (pixel, FOV, slices, kernel, noise, offset, motion), or some fixed, e.g."
        " thickness_mm=1,increment_mm=0.5,kernel=sharp; sets the grid (not with --shape)",
    )
    parser.set_defaults(func=run)


def _key_values(text: str, option: str, convert) -> dict:
    """'a=1,b=2' -> {'a': convert('1'), ...}; an InputError naming the option on anything else."""
    result = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{option} takes 'random'/'all' or KEY=VALUE pairs separated by commas, not {item!r}")
        try:
            result[key.strip()] = convert(value.strip())
        except ValueError:
            raise InputError(f"{option}: {key.strip()}={value.strip()} is not a valid value") from None
    return result


def _setting(value: str):
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return float(value)
    except ValueError:
        return value


def realism_options(args: argparse.Namespace) -> dict:
    """make_thorax_phantom keyword arguments from the realistic-thorax options (only those given)."""
    options = {}
    if args.preset is not None:
        options["preset"] = args.preset
    if args.field_of_view is not None:
        options["field_of_view"] = args.field_of_view
    if args.distractors is not None:
        options["distractors"] = "all" if args.distractors == "all" else _key_values(args.distractors, "--distractors", int)
    if args.acquisition is not None:
        options["acquisition"] = (
            "random" if args.acquisition == "random" else _key_values(args.acquisition, "--acquisition", _setting)
        )
    return options


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
    realism = realism_options(args)
    if realism and args.kind != "thorax":
        raise InputError("--preset, --field-of-view, --distractors and --acquisition apply to the thorax phantom")
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
            options = {"seed": seed, "noise_hu": args.noise, **clearance_options(args), **realism}
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
