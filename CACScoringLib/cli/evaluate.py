"""`cacscoring evaluate`: predicted vs reference label maps -> voxel, lesion, score and risk agreement.

References come from two folders matched by file name (--ref label maps, --images CTs) or from a dataset
manifest (--manifest: manifest.json of `cacscoring import-*`, or a CSV with columns case_id,image,labels);
predictions from a folder of label maps named <case id>.nii.gz (--pred) or from a model (--model).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ..evaluation.agreement import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from ..evaluation.plots import format_statistic as _fmt  # the same text as the plots
from ..evaluation.report import (
    LESION_KEYS,
    TOTAL,
    VOXEL_KEYS,
    VOXEL_MASKS,
    CaseEvaluation,
    evaluate_case,
    evaluate_scores,
    summarize,
    write_report,
)
from ..inference.roi import ROI_MODES
from ..scoring import PRESETS, preset
from . import COMMANDS

NNUNET_CHANNEL = "_0000"  # nnU-Net names images <case>_0000.nii.gz and labels <case>.nii.gz


@dataclass
class ReferenceCase:
    id: str
    image: Path
    labels: Path | None  # None when the reference is scores only
    scores: dict | None = None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help=COMMANDS["evaluate"],
        description="Voxel Dice/IoU/precision/recall/F1, orCaScore-style lesion detection, Agatston and "
        "volume agreement (Pearson, Spearman, regression, ICC, Bland-Altman) and risk-category agreement "
        "(confusion matrix, linearly weighted kappa) of predicted vs reference label maps. Predictions come "
        "from a folder (--pred) or from running a model (--model); references from folders (--ref, "
        "--images) or a dataset manifest (--manifest). Writes evaluation.json, cases.csv and PNG plots.",
    )
    predictions = parser.add_mutually_exclusive_group(required=True)
    predictions.add_argument("--pred", type=Path, metavar="PRED_DIR",
                             help="predicted label maps, one NIfTI per case named like the reference")
    predictions.add_argument("--model", metavar="ID_OR_FOLDER", help="segment every case with this model")
    parser.add_argument("--ref", type=Path, metavar="REF_DIR", help="reference label maps, one NIfTI per case")
    parser.add_argument("--images", type=Path, metavar="IMG_DIR",
                        help="CT images named like the label maps (nnU-Net <case>_0000.nii.gz also found)")
    parser.add_argument("--manifest", type=Path,
                        help="dataset manifest (manifest.json, or CSV with columns case_id,image,labels) "
                        "instead of --ref and --images")
    parser.add_argument("--output", type=Path, required=True, metavar="OUT_DIR", help="report folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard", help="scoring convention")
    parser.add_argument("--voxel-mask", choices=VOXEL_MASKS, default="calcium",
                        help="compare voxels at or above the calcium threshold only (default) or whole labels")
    parser.add_argument("--min-lesion-voxels", type=int, default=1,
                        help="ignore 3D lesions with fewer voxels in lesion detection (default 1)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES, metavar="N",
                        help=f"bootstrap resamples for confidence intervals (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--confidence", type=float, default=DEFAULT_LEVEL, help="CI level (default 0.95)")
    parser.add_argument("--linear-axes", action="store_true", help="scatter plots on linear, not log(1+x), axes")
    parser.add_argument("--no-plots", action="store_true", help="write JSON and CSV only (plots take seconds)")
    model = parser.add_argument_group("with --model")
    model.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    model.add_argument("--roi", choices=ROI_MODES, default="auto", help="heart region search (default auto)")
    model.add_argument("--save-predictions", action="store_true",
                       help="also write the predicted label maps to OUT_DIR/predictions/<case>.nii.gz")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.set_defaults(func=run)


def _image_files(folder: Path, what: str) -> dict[str, Path]:
    """Case id (file name without its image suffix) -> path, for the image files directly in `folder`."""
    from ..io.images import image_suffix

    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist; check the path")
    files = {}
    for path in sorted(folder.iterdir()):
        suffix = image_suffix(path)
        if suffix and path.is_file():
            case_id = path.name[: -len(suffix)]
            if case_id in files:
                raise InputError(f"{folder} holds two files for case {case_id}; keep one")
            files[case_id] = path
    if not files:
        raise InputError(f"no .nii, .nii.gz or .nrrd files in {what} folder {folder}")
    return files


def _missing(kind: str, ids, folder: Path) -> InputError:
    ids = sorted(ids)
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return InputError(f"no {kind} in {folder} for case(s) {shown}: every case needs one (matched by file name)")


def references_from_folders(ref: Path, images: Path) -> list[ReferenceCase]:
    references, image_files = _image_files(ref, "reference"), _image_files(images, "image")
    cases = []
    for case_id, labels in references.items():
        image = image_files.get(case_id) or image_files.get(case_id + NNUNET_CHANNEL)
        if image is None:
            raise _missing("image", [case_id], images)
        cases.append(ReferenceCase(case_id, image, labels))
    return cases


def references_from_manifest(path: Path) -> list[ReferenceCase]:
    """The cases of a manifest.json (`cacscoring import-*`) or of a CSV with columns case_id,image,labels."""
    if path.suffix.lower() != ".csv":
        from ..data.manifest import load_manifest

        manifest = load_manifest(path)
        cases = [ReferenceCase(c.id, c.image, c.labels, c.reference_scores or None) for c in manifest.cases]
    else:
        if not path.is_file():
            raise InputError(f"no manifest at {path}; give a manifest.json or a CSV with columns case_id,image,labels")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"case_id", "image", "labels"} <= set(rows[0]):
            raise InputError(f"{path} needs a header with the columns case_id,image,labels and one row per case")
        root = path.resolve().parent
        cases = [
            ReferenceCase(row["case_id"], root / row["image"], root / row["labels"] if row["labels"] else None)
            for row in rows
        ]
    for case in cases:
        if case.labels is None and not case.scores:
            raise InputError(f"{path}: case {case.id} has neither a label map nor reference scores; fix the manifest")
    return cases


def _predictor(args, cases: list[ReferenceCase]):
    """Function (case, ct) -> predicted label map, from the --pred folder or the --model."""
    from ..io import read_labels, write_labels

    if args.pred is not None:
        predictions = _image_files(args.pred, "prediction")
        absent = {case.id for case in cases} - set(predictions)
        if absent:
            raise _missing("predicted label map", absent, args.pred)
        return lambda case, ct: read_labels(predictions[case.id], ct)

    from ..inference import load_models, segment
    from ..models.package import resolve_device

    device = resolve_device(args.device)
    packages = load_models(args.model, device)  # once for the whole dataset

    def predict(case: ReferenceCase, ct) -> np.ndarray:
        labels = segment(ct, model=packages, device=device, roi=args.roi).labels
        if args.save_predictions:
            write_labels(labels, ct, args.output / "predictions" / f"{case.id}.nii.gz")
        return labels

    return predict


def _evaluate(case: ReferenceCase, predict, args, params) -> CaseEvaluation:
    from ..io import read_ct, read_labels

    ct = read_ct(case.image)
    predicted = predict(case, ct)
    if case.labels is None:
        return evaluate_scores(case.id, case.scores, ct, predicted, params)
    reference = read_labels(case.labels, ct)
    return evaluate_case(case.id, ct, reference, predicted, params, args.voxel_mask, args.min_lesion_voxels)


def run(args) -> int:
    if args.manifest is not None:
        if args.ref is not None or args.images is not None:
            raise InputError("give either --manifest or --ref with --images, not both")
        cases = references_from_manifest(args.manifest)
    elif args.ref is None or args.images is None:
        raise InputError("give --ref REF_DIR and --images IMG_DIR, or --manifest, to say what the reference is")
    else:
        cases = references_from_folders(args.ref, args.images)
    if args.min_lesion_voxels < 1:
        raise InputError(f"--min-lesion-voxels must be >= 1, not {args.min_lesion_voxels}")
    if args.save_predictions and args.model is None:
        raise InputError("--save-predictions needs --model (with --pred the predictions are already files)")
    params = preset(args.preset)
    predict = _predictor(args, cases)
    console = Console(quiet=args.quiet)
    evaluations = []
    for number, case in enumerate(cases, start=1):
        evaluation = _evaluate(case, predict, args, params)
        evaluations.append(evaluation)
        total = evaluation.predicted[TOTAL]["agatston"]
        console.print(f"[{number}/{len(cases)}] {case.id}: predicted Agatston {total:.1f}")
    summary = summarize(evaluations, resamples=args.bootstrap, seed=args.seed, level=args.confidence)
    settings = {
        "preset": args.preset,
        "scoring": params.to_dict(),
        "voxel_mask": args.voxel_mask,
        "min_lesion_voxels": args.min_lesion_voxels,
        "predictions": str(args.pred) if args.pred is not None else {"model": args.model, "roi": args.roi},
        "references": str(args.manifest or args.ref),
    }
    paths = write_report(
        evaluations, summary, args.output, settings, log1p_axes=not args.linear_axes, with_plots=not args.no_plots
    )
    print_summary(summary, console)
    console.print(f"report: {paths['json']}, {paths['csv']} and {len(paths) - 2} plot(s) in {args.output}")
    return 0


def print_summary(summary: dict, console: Console) -> None:
    if "voxels" in summary:
        table = Table(title="Voxels (pooled) and lesions")
        for column in ("", "Dice", "Precision", "Recall", "Lesion sens.", "Lesion PPV", "Lesion F1"):
            table.add_column(column, justify="left" if not column else "right")
        for key in dict.fromkeys((*VOXEL_KEYS, *LESION_KEYS)):
            voxels = summary["voxels"].get(key, {}).get("pooled", {})
            lesions = summary["lesions"].get(key, {})
            table.add_row(key, *(_fmt(voxels.get(m)) for m in ("dice", "precision", "recall")),
                          *(_fmt(lesions.get(m)) for m in ("sensitivity", "ppv", "f1")))
        console.print(table)
    table = Table(title="Agatston agreement")
    for column in ("", "n", "Pearson r", "Spearman ρ", "ICC(A,1)", "Slope", "Intercept", "Bias"):
        table.add_column(column, justify="left" if not column else "right")
    for key, stats in summary["agreement"]["agatston"].items():
        table.add_row(key, str(stats["n"]), _fmt(stats["pearson"]["r"]), _fmt(stats["spearman"]["rho"]),
                      _fmt(stats["icc_a1"]["icc"]), _fmt(stats["regression"]["slope"]),
                      _fmt(stats["regression"]["intercept"], ".1f"), _fmt(stats["bland_altman"]["mean_difference"], ".1f"))
    console.print(table)
    if "risk_categories" in summary:
        risk = summary["risk_categories"]
        ci = risk["bootstrap_ci"]
        console.print(f"Risk categories: linear kappa {_fmt(risk['kappa_linear'])} "
                      f"(CI {_fmt(ci['low'])}-{_fmt(ci['high'])}), accuracy {_fmt(risk['accuracy'])}")
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
