"""Evaluation of predicted against reference calcium label maps: voxel overlap, lesion detection, score
and risk-category agreement, and the report (JSON, CSV, PNG) of `cacscoring evaluate`."""

from .agreement import (
    bland_altman,
    bootstrap_ci,
    category_agreement,
    icc_a1,
    pearson,
    score_agreement,
    spearman,
    weighted_kappa,
)
from .lesions import ALL_ARTERIES, LesionCounts, lesion_counts, match_lesions
from .metrics import FOREGROUND, OverlapCounts, overlap_counts, voxel_metrics
from .report import CaseEvaluation, evaluate_case, evaluate_scores, summarize, write_report

__all__ = [
    "ALL_ARTERIES",
    "FOREGROUND",
    "CaseEvaluation",
    "LesionCounts",
    "OverlapCounts",
    "bland_altman",
    "bootstrap_ci",
    "category_agreement",
    "evaluate_case",
    "evaluate_scores",
    "icc_a1",
    "lesion_counts",
    "match_lesions",
    "overlap_counts",
    "pearson",
    "score_agreement",
    "spearman",
    "summarize",
    "voxel_metrics",
    "weighted_kappa",
    "write_report",
]
