"""Score report files: CSV (per artery + total), JSON (ScoreResult.to_dict), HTML with a key image per artery.

Key image: the axial slice with the most calcium of that artery, CT in a cardiac window with the artery's
voxels overlaid in its contract colour (matplotlib, no Qt).
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np

from CACScoringLib.labels import ARTERIES, ARTERY_LABELS
from CACScoringLib.scoring import ScoreResult
from CACScoringLib.volume import CTVolume

CSV_COLUMNS = ("case", "artery", "lesions", "agatston", "volume_mm3", "mass_mg", "risk_category", "cac_drs")
WINDOW_HU = (-160.0, 240.0)  # level 40, width 400: mediastinal window


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def score_rows(result: ScoreResult):
    return [(key, result.arteries[key]) for key in ARTERIES] + [("Total", result.total)]


def score_row(key: str, score) -> list[str]:
    return [key, str(score.lesions), _number(score.agatston), _number(score.volume_mm3), _number(score.mass_mg)]


def lesion_row(lesion) -> list[str]:
    slices = f"{lesion.first_slice}" if lesion.n_slices == 1 else f"{lesion.first_slice}-{lesion.last_slice}"
    return [str(lesion.id), lesion.artery, slices, _number(lesion.agatston), _number(lesion.volume_mm3),
            f"{lesion.peak_hu:.0f}"]


def write_csv(path: Path, rows: list[tuple[str, ScoreResult]]) -> Path:
    """One row per artery and total for each (case, result)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for case, result in rows:
            for key, score in score_rows(result):
                writer.writerow([case, key.lower() if key == "Total" else key, score.lesions, score.agatston,
                                 score.volume_mm3, "" if score.mass_mg is None else score.mass_mg,
                                 result.risk_category, result.cac_drs])
    return path


def key_slice(hu: np.ndarray, labels: np.ndarray, label_id: int, threshold_hu: float) -> int | None:
    """Axial slice with the most calcium voxels of this artery (None when it has none)."""
    counts = ((labels == label_id) & (hu >= threshold_hu)).sum(axis=(1, 2))
    return int(np.argmax(counts)) if counts.any() else None


def write_key_image(path: Path, ct: CTVolume, labels: np.ndarray, artery, threshold_hu: float) -> Path | None:
    z = key_slice(ct.array, labels, artery.id, threshold_hu)
    if z is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    overlay = np.zeros((*labels.shape[1:], 4))
    overlay[labels[z] == artery.id] = [*(c / 255.0 for c in artery.color), 1.0]
    aspect = ct.spacing[1] / ct.spacing[0]
    figure = Figure(figsize=(4, 4 * aspect * labels.shape[1] / labels.shape[2]), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(ct.array[z], cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=aspect)
    axes.imshow(overlay, aspect=aspect)
    axes.set_axis_off()
    axes.text(4, 12, f"{artery.key} · slice {z}", color="white", fontsize=9)
    figure.savefig(path)
    return path


def write_html(path: Path, case: str, result: ScoreResult, images: dict[str, Path]) -> Path:
    esc = html.escape
    score_table = "".join(
        f"<tr><td>{esc(key)}</td><td>{score.lesions}</td><td>{score.agatston:.1f}</td>"
        f"<td>{score.volume_mm3:.1f}</td><td>{_number(score.mass_mg) or '—'}</td></tr>"
        for key, score in score_rows(result)
    )
    warnings = "".join(f"<li>{esc(w)}</li>" for w in result.warnings) or "<li>none</li>"
    figures = "".join(
        f'<figure><img src="{esc(image.name)}" alt="{esc(key)} key image"><figcaption>{esc(key)}</figcaption></figure>'
        for key, image in images.items()
    )
    path.write_text(
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Coronary calcium report: {esc(case)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}figure{{display:inline-block;margin:0 1em 1em 0}}
img{{max-width:320px}}</style></head><body>
<h1>Coronary artery calcium: {esc(case)}</h1>
<p><b>Risk category:</b> {esc(result.risk_category)} &nbsp; <b>CAC-DRS:</b> {esc(result.cac_drs)}</p>
<table><tr><th>Artery</th><th>3D lesions</th><th>Agatston</th><th>Volume (mm³)</th><th>Mass (mg)</th></tr>
{score_table}</table>
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Key images</h2>{figures or "<p>No calcium.</p>"}
<p>Threshold {result.effective_threshold_hu:g} HU. Research software, not for clinical decisions.</p>
</body></html>
""",
        encoding="utf-8",
    )
    return path


def write_report(folder: Path, case: str, result: ScoreResult, ct: CTVolume, labels: np.ndarray) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": write_csv(folder / f"{case}_scores.csv", [(case, result)])}
    paths["json"] = folder / f"{case}_scores.json"
    paths["json"].write_text(json.dumps({"case": case, **result.to_dict()}, indent=2) + "\n", encoding="utf-8")
    images = {}
    for artery in ARTERY_LABELS:
        image = write_key_image(folder / f"{case}_{artery.key}.png", ct, labels, artery,
                                result.effective_threshold_hu)
        if image is not None:
            images[artery.key] = paths[f"image_{artery.key}"] = image
    paths["html"] = write_html(folder / f"{case}_report.html", case, result, images)
    return paths
