"""`cacscoring score IMAGE [--labels LABELS]`: per-artery Agatston, volume and mass scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ..labels import ARTERIES
from ..scoring import (
    PRESETS,
    SLICE_NORMALIZATIONS,
    ScoreResult,
    calibration_factor_from_rois,
    check_contrast,
    preset,
    score_volume,
)
from . import COMMANDS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help=COMMANDS["score"],
        description="Per-artery Agatston, volume and mass scores of a cardiac CT. IMAGE is a DICOM folder "
        "(a series, or a study whose non-contrast calcium-score series is chosen), a NIfTI (.nii, .nii.gz) or "
        "NRRD (.nrrd, .nhdr) file.",
    )
    parser.add_argument("image", type=Path, help="CT: DICOM folder, NIfTI or NRRD")
    parser.add_argument("--labels", type=Path, help="per-artery label map (0 bg, 1 LM, 2 LAD, 3 LCX, 4 RCA)")
    parser.add_argument("--series", metavar="UID",
                        help="SeriesInstanceUID to score when the folder holds several series "
                        "(default: the non-contrast calcium-score series, chosen and explained)")
    add_scoring_arguments(parser)
    model = add_model_arguments(parser)
    model.add_argument("--save-labels", type=Path, metavar="OUT", help="write the predicted label map")
    model.add_argument("--save-probabilities", type=Path, metavar="DIR",
                       help="write per-class probability maps to DIR")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the scores as JSON")
    parser.add_argument("--csv", type=Path, metavar="OUT", help="write per-artery scores as CSV")
    parser.add_argument("--lesions-csv", type=Path, metavar="OUT", help="write the 3D lesion table as CSV")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(func=run)


def add_scoring_arguments(parser) -> None:
    """Options that set the scoring convention (shared by score and batch)."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard", help="scoring convention")
    parser.add_argument("--threshold-hu", type=float, help="calcium threshold, HU >= this (default 130)")
    parser.add_argument("--connectivity", type=int, choices=(4, 8), help="in-plane lesion connectivity")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--min-area-mm2", type=float, help="drop 2D lesions smaller than this (default 1 mm²)")
    size.add_argument("--min-pixels", type=int, help="drop 2D lesions with fewer pixels")
    size.add_argument("--no-min-size", action="store_true", help="keep lesions of any size")
    parser.add_argument("--slice-normalization", choices=SLICE_NORMALIZATIONS,
                        help="scale by increment/3 mm, thickness/3 mm or not at all (default increment)")
    parser.add_argument("--kvp", type=float, help="tube voltage, overriding the scan's")
    parser.add_argument("--kvp-adapted", action="store_true",
                        help="adapt threshold and weight bands to the tube voltage (70-120 kVp)")
    parser.add_argument("--mass-calibration-factor", type=float, metavar="MG_CM3_PER_HU",
                        help="HA calibration factor for the mass score")
    parser.add_argument("--calibration-rois", type=Path, metavar="LABELS",
                        help="label map with 1 = water region, 2 = hydroxyapatite region (measures the factor)")
    parser.add_argument("--ha-density", type=float, default=200.0,
                        help="density of the HA calibration region in mg/cm³ (default 200)")
    contrast = parser.add_mutually_exclusive_group()
    contrast.add_argument("--contrast-threshold-hu", type=float, metavar="HU",
                          help="blood pool above this marks a contrast-enhanced CT, whose scores and risk "
                          "category are not valid (default 150)")
    contrast.add_argument("--no-contrast-check", action="store_true",
                          help="do not measure the blood pool (e.g. a phantom without one)")


def add_model_arguments(parser):
    """Options of the segmentation model used when no labels are given (shared by score and batch)."""
    model = parser.add_argument_group("segmentation (when no --labels is given)")
    model.add_argument("--model", action="append", metavar="ID_OR_FOLDER",
                       help="registry id or model package folder (default: the registry default); "
                       "repeat for an ensemble")
    model.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    model.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                       help="onnx runs onnxruntime on CPU")
    model.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    model.add_argument("--ensemble", default="mean", metavar="RULE",
                       help="how repeated --model outputs combine: mean (softmax), or multiplicative (seed 000: "
                       "first model Tversky, second BCE baseline)")
    return model


def scoring_params(args, ct):
    """ScoringParams from the preset and the options given on the command line."""
    from ..io import read_labels

    changes = {}
    if args.threshold_hu is not None:
        changes["threshold_hu"] = args.threshold_hu
    if args.connectivity is not None:
        changes["connectivity"] = args.connectivity
    if args.min_area_mm2 is not None:
        changes.update(min_area_mm2=args.min_area_mm2, min_pixels=None)
    elif args.min_pixels is not None:
        changes.update(min_area_mm2=None, min_pixels=args.min_pixels)
    elif args.no_min_size:
        changes.update(min_area_mm2=None, min_pixels=None)
    if args.slice_normalization is not None:
        changes["slice_normalization"] = args.slice_normalization
    if args.kvp is not None:
        changes["kvp"] = args.kvp
    if args.kvp_adapted:
        changes["kvp_adapted_threshold"] = True
    if args.contrast_threshold_hu is not None:
        changes["contrast_threshold_hu"] = args.contrast_threshold_hu
    elif args.no_contrast_check:
        changes["contrast_threshold_hu"] = None
    if args.mass_calibration_factor is not None and args.calibration_rois is not None:
        raise InputError("give --mass-calibration-factor or --calibration-rois, not both")
    if args.mass_calibration_factor is not None:
        changes["mass_calibration_factor"] = args.mass_calibration_factor
    if args.calibration_rois is not None:
        rois = read_labels(args.calibration_rois, ct)
        calibration = calibration_factor_from_rois(ct.array, rois == 1, rois == 2, args.ha_density)
        changes.update(mass_calibration_factor=calibration.factor_mg_cm3_per_hu,
                       mass_water_hu=calibration.water_hu)
    return preset(args.preset).with_(**changes)


def run(args) -> int:
    from ..io import read_ct, read_labels

    ct = read_ct(args.image, series_uid=args.series)
    if ct.info.series_choice is not None and not args.quiet:
        print(series_line(ct.info.series_choice))
    labels = None if args.labels is None else read_labels(args.labels, ct)
    result, report = score_ct(ct, labels, args)
    report = {"input": input_section(args.image, args.labels, ct), **report}
    write_outputs(result, report, args)
    if not args.quiet:
        print_result(result)
    return 0


def input_section(image: Path, labels: Path | None, ct) -> dict:
    """The JSON's "input": the files, and for DICOM the series read and why (shared by score and batch)."""
    section = {"image": str(image), "labels": None if labels is None else str(labels)}
    if ct.info.series_choice is not None:
        section["series"] = ct.info.series_choice
    return section


def series_line(choice: dict) -> str:
    """One line naming the series read and why; the others passed over and why."""
    line = (f"series {choice['series_instance_uid']} '{choice['description']}' ({choice['selection']}): "
            f"{choice['reason']}")
    passed_over = "; ".join(f"{s['series_instance_uid']} '{s['description']}': {s['reason']}"
                            for s in choice["passed_over"])
    return line + (f"; passed over: {passed_over}" if passed_over else "")


def score_ct(ct, labels, args, packages=None) -> tuple[ScoreResult, dict]:
    """Score with the given labels, or segment first with the model options (or `packages`, the models loaded
    already); the report is the JSON."""
    params = scoring_params(args, ct)
    report = {}
    segmentation_warnings = []
    heart = None
    if labels is None:
        segmentation = segment_with_progress(ct, args, params, packages)
        labels = segmentation.labels
        segmentation_warnings = segmentation.warnings
        heart = segmentation.roi.heart
        report["model"] = {
            "id": segmentation.model_id,
            "version": segmentation.model_version,
            "device": segmentation.device,
            "backend": segmentation.backend,
            "timings_s": segmentation.timings,
        }
    result = score_volume(ct, labels, params, check_contrast(ct, params, heart))
    result.warnings[:0] = segmentation_warnings
    report.update(result.to_dict())
    return result, report


def model_spec(args):
    """What --model names for `segment`: None (the registry default), one id or folder, or an ensemble list."""
    return None if not args.model else args.model if len(args.model) > 1 else args.model[0]


def segment_with_progress(ct, args, params, packages=None):
    """Run the segmentation model (`packages` when loaded already) with a progress bar; threshold as the scoring
    will use it."""
    from rich.progress import Progress

    from ..inference import segment, write_segmentation_outputs
    from ..scoring.engine import effective_threshold_hu

    model = model_spec(args)
    with Progress(transient=True, disable=args.quiet) as bar:
        task = bar.add_task("segmenting", total=1.0)
        segmentation = segment(
            ct,
            model=packages or model,
            device=args.device,
            backend=args.backend,
            tta=args.tta,
            ensemble=args.ensemble,
            threshold_hu=effective_threshold_hu(ct, params),
            return_probabilities=getattr(args, "save_probabilities", None) is not None,
            progress=lambda fraction, message: bar.update(task, completed=fraction, description=message),
        )
    if getattr(args, "save_labels", None) is not None:
        from ..io import write_labels

        args.save_labels.parent.mkdir(parents=True, exist_ok=True)
        write_labels(segmentation.labels, ct, args.save_labels)
    if getattr(args, "save_probabilities", None) is not None:
        write_segmentation_outputs(segmentation, ct, args.save_probabilities)
    return segmentation


def write_outputs(result: ScoreResult, report: dict, args) -> None:
    """--json, --csv and --lesions-csv; a folder that is read-only or a file is a one-line InputError."""
    try:
        _write_output_files(result, report, args)
    except OSError as error:
        raise InputError(
            f"cannot write {error.filename or 'the output'} ({error.strerror or error}); "
            "give a path in a writable folder"
        ) from None


def _write_output_files(result: ScoreResult, report: dict, args) -> None:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["artery", "lesions", "agatston", "volume_mm3", "mass_mg"])
            rows = [(key, result.arteries[key]) for key in ARTERIES] + [("total", result.total)]
            for key, score in rows:
                writer.writerow([key, score.lesions, score.agatston, score.volume_mm3,
                                 "" if score.mass_mg is None else score.mass_mg])
    if args.lesions_csv:
        args.lesions_csv.parent.mkdir(parents=True, exist_ok=True)
        rows = [lesion.to_dict() for lesion in result.lesions]
        columns = list(rows[0]) if rows else ["id", "artery"]
        with open(args.lesions_csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


def _mass(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def print_result(result: ScoreResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="Coronary artery calcium")
    for column in ("Artery", "Lesions (3D)", "Agatston", "Volume (mm³)", "Mass (mg)"):
        table.add_column(column, justify="left" if column == "Artery" else "right")
    for key in ARTERIES:
        score = result.arteries[key]
        table.add_row(key, str(score.lesions), f"{score.agatston:.1f}", f"{score.volume_mm3:.1f}",
                      _mass(score.mass_mg))
    total = result.total
    table.add_row("Total", str(total.lesions), f"{total.agatston:.1f}", f"{total.volume_mm3:.1f}",
                  _mass(total.mass_mg), style="bold")
    console.print(table)
    console.print(f"Risk category: {result.risk_category}    CAC-DRS: {result.cac_drs}")
    if result.contrast is not None and result.contrast.blood_pool_hu is not None:
        console.print(f"Blood pool: {result.contrast.blood_pool_hu:.0f} HU "
                      f"({'contrast-enhanced' if result.contrast.enhanced else 'no contrast'})")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
