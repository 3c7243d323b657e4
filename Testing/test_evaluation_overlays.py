"""PNG overlays of a segmentation for judging it by anatomy."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread

from CACScoringLib.anatomy import find_heart
from CACScoringLib.evaluation.overlays import ARTERY_COLOURS, write_lesion_overlay, write_region_overlay
from CACScoringLib.labels import LABEL_ID
from CACScoringLib.phantom import make_thorax_phantom


def test_region_and_lesion_overlays_show_the_region_and_each_artery_colour(tmp_path):
    phantom = make_thorax_phantom(seed=3, p_no_calcium=0.0)
    heart, _ = find_heart(phantom.ct)
    region_png = write_region_overlay(phantom.ct, heart.on_ct_grid(), phantom.labels, tmp_path / "r.png", "seed 3")
    lesion_png = write_lesion_overlay(phantom.ct, phantom.labels, phantom.scores.lesions, tmp_path / "l.png", "seed 3")
    region, lesions = imread(region_png), imread(lesion_png)
    yellow = (region[..., 0] > 0.9) & (region[..., 1] > 0.9) & (region[..., 2] < 0.2)
    assert yellow.sum() > 500  # the region's outline is drawn
    for artery in {lesion.artery for lesion in phantom.scores.lesions}:
        colour = np.array(ARTERY_COLOURS[LABEL_ID[artery]])
        assert (np.abs(lesions[..., :3] - colour).max(axis=-1) < 0.08).any(), artery  # its colour in the close-ups


def test_lesion_overlay_without_lesions_says_so(tmp_path):
    phantom = make_thorax_phantom(seed=1, p_no_calcium=1.0)
    path = write_lesion_overlay(phantom.ct, phantom.labels, [], tmp_path / "none.png", "no calcium")
    assert imread(path).shape[0] > 100
