"""PNG plots of an evaluation: score scatter with regression and identity lines, Bland-Altman, risk-category
confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so nothing changes the backend of a host
application such as 3D Slicer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANEL_INCHES = 3.6
DPI = 110
UNDEFINED = "—"  # a statistic that does not exist (e.g. Pearson r of constant scores), in plots and terminal


def format_statistic(value: float | None, spec: str = ".3f") -> str:
    """A statistic as plots and the terminal both show it: UNDEFINED for None or NaN."""
    return UNDEFINED if value is None or value != value else format(value, spec)


def _figure(n_panels: int, columns: int = 3) -> tuple[Figure, list]:
    rows = math.ceil(n_panels / columns)
    columns = min(columns, n_panels)
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, list(axes[:n_panels])


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _log1p_axis(axis, upper: float) -> None:
    """log(1 + score) scale with ticks in score units at 0, 1, 3, 10, 30, ... (zero scores stay visible)."""
    for scale in (axis.set_xscale, axis.set_yscale):
        scale("function", functions=(np.log1p, np.expm1))
    ticks = [0.0] + [m * 10.0**e for e in range(int(math.log10(max(upper, 1.0))) + 1) for m in (1, 3)]
    ticks = [t for t in ticks if t <= upper]
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axis.set_yticks(ticks, [f"{t:g}" for t in ticks])


def scatter_plot(
    panels: dict[str, tuple[np.ndarray, np.ndarray, dict]],
    path: str | Path,
    score_label: str,
    log1p: bool = False,
) -> Path:
    """One panel per key: predicted vs reference, identity line, least-squares line; title with n, r, ICC.

    `panels[key] = (reference, predicted, agreement)` with `agreement` from `score_agreement`.
    """
    figure, axes = _figure(len(panels))
    for axis, (key, (reference, predicted, agreement)) in zip(axes, panels.items(), strict=True):
        highest = float(max(reference.max(initial=0), predicted.max(initial=0), 1.0))
        upper = float(np.expm1(np.log1p(highest) * 1.05)) if log1p else highest * 1.05
        # evenly spaced on the displayed scale, so the fitted line stays smooth near zero on log1p axes
        line = np.expm1(np.linspace(0.0, np.log1p(upper), 200)) if log1p else np.linspace(0.0, upper, 200)
        axis.plot(line, line, color="0.6", linestyle="--", linewidth=1, label="identity")
        slope, intercept = agreement["regression"]["slope"], agreement["regression"]["intercept"]
        if np.isfinite(slope):
            fitted = slope * line + intercept
            keep = fitted >= 0  # a log1p axis cannot show negative values
            axis.plot(line[keep], fitted[keep], color="tab:red", linewidth=1.5,
                      label=f"y = {slope:.3g}x {intercept:+.3g}")
        axis.scatter(reference, predicted, s=18, alpha=0.75, color="tab:blue", edgecolors="none", clip_on=False)
        if log1p:
            _log1p_axis(axis, upper)
        axis.set_xlim(0, upper)
        axis.set_ylim(0, upper)
        axis.set_aspect("equal", adjustable="box")
        axis.set_xlabel(f"reference {score_label}")
        axis.set_ylabel(f"predicted {score_label}")
        r, icc = agreement["pearson"]["r"], agreement["icc_a1"]["icc"]
        axis.set_title(f"{key}  n={agreement['n']}  r={format_statistic(r)}  ICC={format_statistic(icc)}", fontsize=9)
        axis.legend(loc="upper left", fontsize=7, frameon=False)
        axis.grid(alpha=0.3)
    return _save(figure, path)


def bland_altman_plot(
    panels: dict[str, tuple[np.ndarray, np.ndarray, dict]],
    path: str | Path,
    score_label: str,
) -> Path:
    """One panel per key: difference (predicted - reference) against the pair mean, bias and ±1.96 SD lines."""
    figure, axes = _figure(len(panels))
    for axis, (key, (reference, predicted, agreement)) in zip(axes, panels.items(), strict=True):
        limits = agreement["bland_altman"]
        axis.scatter((reference + predicted) / 2, predicted - reference, s=18, alpha=0.75, edgecolors="none")
        axis.axhline(limits["mean_difference"], color="tab:red", linewidth=1.5,
                     label=f"bias {format_statistic(limits['mean_difference'], '.3g')}")
        for name in ("lower_limit", "upper_limit"):
            if np.isfinite(limits[name]):
                axis.axhline(limits[name], color="tab:red", linestyle="--", linewidth=1)
        if np.isfinite(limits["sd_difference"]):
            axis.plot([], [], color="tab:red", linestyle="--",
                      label=f"LoA {limits['lower_limit']:.3g} to {limits['upper_limit']:.3g}")
        axis.axhline(0.0, color="0.6", linewidth=0.8)
        spread = np.abs(predicted - reference).max(initial=0.0)
        if spread <= 1e-9 * max(1.0, float(np.abs(reference).max(initial=0.0))):
            axis.set_ylim(-1.0, 1.0)  # identical scores: keep rounding noise from setting the scale
        axis.set_xlabel(f"mean of both, {score_label}")
        axis.set_ylabel(f"predicted - reference, {score_label}")
        axis.set_title(f"{key}  n={agreement['n']}", fontsize=9)
        axis.legend(loc="best", fontsize=7, frameon=False)
        axis.grid(alpha=0.3)
    return _save(figure, path)


def confusion_matrix_plot(agreement: dict, path: str | Path, title: str = "risk category") -> Path:
    """Counts of reference (rows) vs predicted (columns) categories, from `category_agreement`."""
    matrix = np.asarray(agreement["confusion_matrix"])
    categories = agreement["categories"]
    figure = Figure(figsize=(4.8, 4.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    for (row, column), count in np.ndenumerate(matrix):
        dark = count > 0.6 * matrix.max()
        axis.text(column, row, str(count), ha="center", va="center", color="white" if dark else "black")
    axis.set_xticks(range(len(categories)), categories)
    axis.set_yticks(range(len(categories)), categories)
    axis.set_xlabel("predicted")
    axis.set_ylabel("reference")
    ci = agreement["bootstrap_ci"]
    axis.set_title(
        f"{title}  n={agreement['n']}\nlinear kappa {format_statistic(agreement['kappa_linear'])} "
        f"({100 * ci['level']:.0f}% CI {format_statistic(ci['low'])}-{format_statistic(ci['high'])})",
        fontsize=9,
    )
    figure.colorbar(image, ax=axis, shrink=0.8)
    return _save(figure, path)
