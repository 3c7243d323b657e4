"""PNG overlays for judging a segmentation on a real scan by anatomy: the heart region on axial slices and
two reformats, and each labelled lesion in close-up with its artery's colour.

Drawn on matplotlib's Agg canvas directly (no pyplot), as plots.py does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..labels import ARTERY_LABELS
from ..volume import CTVolume

WINDOW_HU = (-250.0, 550.0)  # mediastinal window with calcium still bright
ARTERY_COLOURS = {label.id: tuple(c / 255 for c in label.color) for label in ARTERY_LABELS}


def _canvas(rows: int, columns: int, inches: float = 3.0) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(inches * columns, inches * rows), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    return figure, axes


def _save(figure: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _show(axis, image: np.ndarray, aspect: float = 1.0) -> None:
    axis.imshow(image, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], origin="upper", aspect=aspect,
                interpolation="nearest")


def _outline(axis, mask: np.ndarray, colour, width: float = 1.0) -> None:
    if mask.any() and not mask.all():
        axis.contour(mask.astype(np.uint8), levels=[0.5], colors=[colour], linewidths=width)


def write_region_overlay(ct: CTVolume, region: np.ndarray, labels: np.ndarray, path, title: str) -> Path:
    """Ten axial slices from below to above the region, a sagittal and a coronal reformat through its centre;
    the region in yellow, labelled calcium in its artery's colour."""
    z_levels = np.flatnonzero(region.any(axis=(1, 2)))
    lo, hi = (z_levels[0], z_levels[-1]) if len(z_levels) else (0, ct.shape[0] - 1)
    lo, hi = max(0, lo - 2), min(ct.shape[0] - 1, hi + 2)
    slices = np.unique(np.linspace(lo, hi, 10).round().astype(int))
    figure, axes = _canvas(3, 4)
    for axis, z in zip(axes.ravel(), slices, strict=False):
        _show(axis, ct.array[z])
        _outline(axis, region[z], "yellow")
        for label, colour in ARTERY_COLOURS.items():
            _outline(axis, labels[z] == label, colour, 1.5)
        axis.set_title(f"slice {z}", fontsize=8)
    centre = np.argwhere(region).mean(axis=0).round().astype(int) if region.any() else np.array(ct.shape) // 2
    aspect = ct.spacing[2] / ct.spacing[1]
    for axis, (image, mask, name) in zip(
        axes.ravel()[-2:],
        ((ct.array[::-1, :, centre[2]], region[::-1, :, centre[2]], "sagittal"),
         (ct.array[::-1, centre[1], :], region[::-1, centre[1], :], "coronal")),
        strict=True,
    ):
        _show(axis, image, aspect)
        _outline(axis, mask, "yellow")
        axis.set_title(f"{name} (head up)", fontsize=8)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def write_lesion_overlay(ct: CTVolume, labels: np.ndarray, lesions: list, path, title: str,
                         half_mm: float = 25.0, most: int = 16) -> Path:
    """A close-up (2 x half_mm square) of each lesion's middle slice, largest Agatston first, its outline in its
    artery's colour and the title naming artery, slice and Agatston."""
    chosen = sorted(lesions, key=lambda lesion: -lesion.agatston)[:most]
    columns = 4
    figure, axes = _canvas(max(1, -(-len(chosen) // columns)), columns, 2.6)
    half_y, half_x = round(half_mm / ct.spacing[1]), round(half_mm / ct.spacing[0])
    for axis, lesion in zip(axes.ravel(), chosen, strict=False):
        z, y, x = (round(c) for c in lesion.centroid_zyx)
        y0, x0 = max(0, y - half_y), max(0, x - half_x)
        window = (z, slice(y0, y + half_y), slice(x0, x + half_x))
        _show(axis, ct.array[window])
        for label, colour in ARTERY_COLOURS.items():
            _outline(axis, labels[window] == label, colour, 1.5)
        axis.set_title(f"{lesion.artery} slice {z}: {lesion.agatston:.0f}", fontsize=8)
    if not chosen:
        axes.ravel()[0].text(0.5, 0.5, "no lesion labelled", ha="center", va="center")
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)
