"""A model on a real scan, judged by anatomy: the heart region and blood pool, the lesions per artery, the
labelled voxels outside the region (and, on the QRM calcium phantom, off its inserts), and PNG overlays
(overlays.py). Used by scripts/realct_report.py and the default model's evaluation (its model card).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import find_heart
from ..labels import ARTERIES
from ..scoring import ScoringParams, check_contrast, score_volume
from .overlays import write_lesion_overlay, write_region_overlay


def report_scan(name: str, ct, model, output: Path) -> tuple[dict, np.ndarray]:
    """Segment `ct` with `model` (registry id, folder or ModelPackage), score it and write
    `<name>_region.png` and `<name>_lesions.png` into `output`; (figures, label map)."""
    from ..inference import segment

    segmentation = segment(ct, model=model, device="cpu")
    params = ScoringParams()
    heart = segmentation.roi.heart or find_heart(ct)[0]
    result = score_volume(ct, segmentation.labels, params, check_contrast(ct, params, heart))
    region = heart.on_ct_grid() if heart is not None else np.zeros(ct.shape, bool)
    labelled = segmentation.labels > 0
    figures = {
        "model": f"{segmentation.model_id} {segmentation.model_version}",
        "heart_region_slices": None if heart is None else list(heart.bounds()[0]),
        "blood_pool_hu": None if heart is None else round(heart.blood_pool_hu, 1),
        "lesions": {key: result.arteries[key].lesions for key in ARTERIES} | {"total": result.total.lesions},
        "agatston": {key: round(result.arteries[key].agatston, 1) for key in ARTERIES}
        | {"total": round(result.total.agatston, 1)},
        "labelled_voxels": int(labelled.sum()),
        "labelled_voxels_outside_heart_region": int((labelled & ~region).sum()),
        "lesion_list": [
            {"artery": lesion.artery, "slices": [lesion.first_slice, lesion.last_slice],
             "centroid_zyx": [round(c) for c in lesion.centroid_zyx], "agatston": round(lesion.agatston, 1),
             "peak_hu": round(lesion.peak_hu)}
            for lesion in result.lesions
        ],
        "warnings": result.warnings,
    }
    title = f"{name}: {result.total.lesions} lesions, Agatston {result.total.agatston:.0f}"
    figures["region_png"] = write_region_overlay(ct, region, segmentation.labels, output / f"{name}_region.png", title).name
    figures["lesions_png"] = write_lesion_overlay(ct, segmentation.labels, result.lesions, output / f"{name}_lesions.png",
                                                  title).name
    return figures, segmentation.labels


CARDIAC_INSERT_RADIUS_MM = 50.0  # the QRM cardiac calcification insert is 100 mm across


def qrm_lesions_on_inserts(ct, labels: np.ndarray, lesion_list: list[dict]) -> dict:
    """Labelled voxels on the nine insert ROIs and elsewhere; lesions (report_scan's lesion_list) whose centroid
    lies outside the cardiac insert's disc, in the phantom's body around it."""
    from ..phantom.qrm import locate_qrm_inserts

    layout = locate_qrm_inserts(ct)
    on_inserts = layout.insert_map > 0
    labelled = labels > 0
    centre = np.asarray(layout.centre_yx)
    spacing_yx = np.asarray(ct.spacing[1::-1])
    outside = [
        lesion for lesion in lesion_list
        if np.hypot(*((np.asarray(lesion["centroid_zyx"][1:]) - centre) * spacing_yx)) > CARDIAC_INSERT_RADIUS_MM
    ]
    return {"labelled_voxels_on_inserts": int((labelled & on_inserts).sum()),
            "labelled_voxels_off_inserts": int((labelled & ~on_inserts).sum()),
            "lesions_outside_cardiac_insert": len(outside)}
