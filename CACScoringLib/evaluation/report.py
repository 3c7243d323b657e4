"""Evaluate predicted against reference label maps case by case, summarise a dataset, write the report.

Per case: both label maps are scored with the same `ScoringParams` (`score_volume`), then compared voxel
by voxel (metrics.py) and lesion by lesion (lesions.py). Over the dataset: pooled voxel and lesion
metrics, score agreement per artery and total (agreement.py) and risk-category agreement. The report is
evaluation.json (all numbers; NaN written as null), cases.csv (one row per case and artery/total) and PNG
plots.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..labels import ARTERIES
from ..scoring import RISK_CATEGORIES, ScoreResult, ScoringParams, risk_category, score_volume
from ..volume import CTVolume
from . import plots
from .agreement import DEFAULT_LEVEL, DEFAULT_RESAMPLES, category_agreement, score_agreement
from .lesions import ALL_ARTERIES, LesionCounts, lesion_counts
from .metrics import FOREGROUND, METRIC_NAMES, OverlapCounts, overlap_counts

TOTAL = "total"
SCORE_KEYS = (*ARTERIES, TOTAL)
SCORE_KINDS = {"agatston": "Agatston", "volume_mm3": "volume (mm³)"}
VOXEL_KEYS = (*ARTERIES, FOREGROUND)
LESION_KEYS = (*ARTERIES, ALL_ARTERIES, FOREGROUND)
VOXEL_MASKS = ("calcium", "labels")


def scores_of(result: ScoreResult) -> dict[str, dict[str, float]]:
    """Agatston and volume per artery key and TOTAL."""
    parts = {**result.arteries, TOTAL: result.total}
    return {key: {"agatston": float(parts[key].agatston), "volume_mm3": float(parts[key].volume_mm3)} for key in SCORE_KEYS}


@dataclass
class CaseEvaluation:
    case_id: str
    reference: dict[str, dict[str, float]]  # SCORE_KEYS -> score kind -> value (a kind may be missing)
    predicted: dict[str, dict[str, float]]
    voxels: dict[str, OverlapCounts] | None = None  # None without a reference label map
    lesions: dict[str, LesionCounts] | None = None

    @property
    def reference_risk(self) -> str | None:
        agatston = self.reference.get(TOTAL, {}).get("agatston")
        return None if agatston is None else risk_category(agatston)

    @property
    def predicted_risk(self) -> str:
        return risk_category(self.predicted[TOTAL]["agatston"])

    def to_dict(self) -> dict:
        entry = {
            "id": self.case_id,
            "reference": self.reference,
            "predicted": self.predicted,
            "reference_risk_category": self.reference_risk,
            "predicted_risk_category": self.predicted_risk,
        }
        if self.voxels is not None:
            entry["voxels"] = {key: {**c.to_dict(), **c.metrics()} for key, c in self.voxels.items()}
        if self.lesions is not None:
            entry["lesions"] = {key: {**c.to_dict(), **c.metrics()} for key, c in self.lesions.items()}
        return entry


def evaluate_case(
    case_id: str,
    ct: CTVolume,
    reference_labels: np.ndarray,
    predicted_labels: np.ndarray,
    params: ScoringParams | None = None,
    voxel_mask: str = "calcium",
    min_lesion_voxels: int = 1,
) -> CaseEvaluation:
    """Score both label maps of one CT and compare them.

    `voxel_mask="calcium"` compares voxels at or above the scoring threshold only (what the scores count;
    reference contours often include soft tissue), "labels" compares the label maps as they are.
    Lesions always use calcium voxels (threshold of the scoring, kVp-adapted when the params say so);
    lesions of fewer than `min_lesion_voxels` voxels are ignored.
    """
    if voxel_mask not in VOXEL_MASKS:
        raise InputError(f"voxel mask must be one of {', '.join(VOXEL_MASKS)}, not {voxel_mask!r}")
    params = params or ScoringParams()
    reference = score_volume(ct, reference_labels, params)
    predicted = score_volume(ct, predicted_labels, params)
    calcium = ct.array >= reference.effective_threshold_hu
    return CaseEvaluation(
        case_id=case_id,
        reference=scores_of(reference),
        predicted=scores_of(predicted),
        voxels=overlap_counts(reference_labels, predicted_labels, calcium if voxel_mask == "calcium" else None),
        lesions=lesion_counts(
            ct.array, reference_labels, predicted_labels, ct.voxel_volume_mm3, reference.effective_threshold_hu, min_lesion_voxels
        ),
    )


def evaluate_scores(
    case_id: str,
    reference_scores: dict[str, dict[str, float]],
    ct: CTVolume,
    predicted_labels: np.ndarray,
    params: ScoringParams | None = None,
) -> CaseEvaluation:
    """A case whose reference is scores only (no label map, e.g. COCA non-gated): score agreement only."""
    if TOTAL not in reference_scores or "agatston" not in reference_scores[TOTAL]:
        raise InputError(f"case {case_id}: reference scores lack the total Agatston score; re-run the import")
    predicted = score_volume(ct, predicted_labels, params or ScoringParams())
    return CaseEvaluation(case_id=case_id, reference=reference_scores, predicted=scores_of(predicted))


def _pooled(counts: list) -> dict:
    total = sum(counts[1:], counts[0])
    return {**total.to_dict(), **total.metrics()}


def _case_means(counts: list[OverlapCounts]) -> dict:
    """Mean of per-case voxel metrics, NaN cases left out; `n_<metric>` says how many cases counted."""
    values = {name: np.array([c.metrics()[name] for c in counts]) for name in METRIC_NAMES}
    means = {}
    for name, column in values.items():
        defined = column[np.isfinite(column)]
        means[name] = float(defined.mean()) if defined.size else float("nan")
        means[f"n_{name}"] = int(defined.size)
    return means


def summarize(
    cases: list[CaseEvaluation],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict:
    """Dataset-level numbers: pooled voxel and lesion metrics, score and risk-category agreement."""
    if not cases:
        raise InputError("no cases to evaluate: check the prediction and reference folders or the manifest")
    bootstrap = {"resamples": resamples, "seed": seed, "level": level}
    summary: dict = {"n_cases": len(cases), "bootstrap": bootstrap, "notes": []}
    segmented = [case for case in cases if case.voxels is not None]
    summary["n_cases_with_reference_labels"] = len(segmented)
    if segmented:
        summary["voxels"] = {
            key: {
                "pooled": _pooled([case.voxels[key] for case in segmented]),
                "case_mean": _case_means([case.voxels[key] for case in segmented]),
            }
            for key in VOXEL_KEYS
        }
        summary["lesions"] = {key: _pooled([case.lesions[key] for case in segmented]) for key in LESION_KEYS}

    summary["agreement"] = {}
    for kind in SCORE_KINDS:
        per_key = {}
        for key in SCORE_KEYS:
            pairs = [
                (case.reference[key][kind], case.predicted[key][kind])
                for case in cases
                if kind in case.reference.get(key, {})
            ]
            if len(pairs) >= 2:
                reference, predicted = zip(*pairs, strict=True)
                per_key[key] = score_agreement(reference, predicted, **bootstrap)
            else:
                summary["notes"].append(f"{kind} {key}: {len(pairs)} case(s) with a reference score, agreement needs 2")
        summary["agreement"][kind] = per_key

    rated = [case for case in cases if case.reference_risk is not None]
    if rated:
        summary["risk_categories"] = category_agreement(
            [case.reference_risk for case in rated], [case.predicted_risk for case in rated], RISK_CATEGORIES, **bootstrap
        )
    return summary


def _json_safe(value):
    """NaN and infinities become null: strict JSON has no such numbers."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


CSV_COLUMNS = (
    "case_id", "artery",
    "reference_agatston", "predicted_agatston", "reference_volume_mm3", "predicted_volume_mm3",
    "reference_risk_category", "predicted_risk_category",
    "dice", "iou", "precision", "recall", "f1", "voxels_tp", "voxels_fp", "voxels_fn",
    "reference_lesions", "detected_lesions", "predicted_lesions", "true_lesions",
    "lesion_sensitivity", "lesion_ppv", "lesion_f1",
)  # fmt: skip


def _csv_rows(case: CaseEvaluation):
    for key in SCORE_KEYS:
        # the total row carries the artery-agnostic comparison and the case's risk categories
        compared = FOREGROUND if key == TOTAL else key
        row = {
            "case_id": case.case_id,
            "artery": key,
            "reference_agatston": case.reference.get(key, {}).get("agatston"),
            "predicted_agatston": case.predicted[key]["agatston"],
            "reference_volume_mm3": case.reference.get(key, {}).get("volume_mm3"),
            "predicted_volume_mm3": case.predicted[key]["volume_mm3"],
        }
        if key == TOTAL:
            row.update(reference_risk_category=case.reference_risk, predicted_risk_category=case.predicted_risk)
        if case.voxels is not None:
            voxels = case.voxels[compared]
            row.update(voxels.metrics())
            row.update(voxels_tp=voxels.tp, voxels_fp=voxels.fp, voxels_fn=voxels.fn)
            lesions = case.lesions[compared]
            metrics = lesions.metrics()
            row.update(
                reference_lesions=lesions.reference,
                detected_lesions=lesions.detected,
                predicted_lesions=lesions.predicted,
                true_lesions=lesions.true,
                lesion_sensitivity=metrics["sensitivity"],
                lesion_ppv=metrics["ppv"],
                lesion_f1=metrics["f1"],
            )
        yield {column: _csv_value(row.get(column)) for column in CSV_COLUMNS}


def _csv_value(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def _plot_panels(cases: list[CaseEvaluation], summary: dict, kind: str) -> dict:
    panels = {}
    for key in (TOTAL, *ARTERIES):
        agreement = summary["agreement"][kind].get(key)
        if agreement is None:
            continue
        pairs = [(c.reference[key][kind], c.predicted[key][kind]) for c in cases if kind in c.reference.get(key, {})]
        reference, predicted = (np.array(v, dtype=float) for v in zip(*pairs, strict=True))
        panels[key] = (reference, predicted, agreement)
    return panels


def write_report(
    cases: list[CaseEvaluation],
    summary: dict,
    output: str | Path,
    settings: dict | None = None,
    log1p_axes: bool = True,
    with_plots: bool = True,
) -> dict[str, Path]:
    """Write evaluation.json, cases.csv and (unless `with_plots` is False) the PNG plots into `output`;
    returns the paths by name."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"json": output / "evaluation.json", "csv": output / "cases.csv"}
    for kind, label in SCORE_KINDS.items():
        panels = _plot_panels(cases, summary, kind) if with_plots else {}
        if panels:
            paths[f"{kind}_scatter"] = plots.scatter_plot(panels, output / f"{kind}_scatter.png", label, log1p_axes)
            paths[f"{kind}_bland_altman"] = plots.bland_altman_plot(panels, output / f"{kind}_bland_altman.png", label)
    if with_plots and "risk_categories" in summary:
        paths["risk_confusion"] = plots.confusion_matrix_plot(summary["risk_categories"], output / "risk_confusion.png")

    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for case in cases:
            writer.writerows(_csv_rows(case))
    document = {
        "settings": settings or {},
        "summary": summary,
        "cases": [case.to_dict() for case in cases],
        "files": {name: path.name for name, path in paths.items()},
    }
    paths["json"].write_text(json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return paths
