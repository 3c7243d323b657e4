"""Heart ROI heuristic on the project's thorax phantoms: it must hold all coronary calcium and crop."""

from __future__ import annotations

import numpy as np
import pytest

from CACScoringLib.inference import heart_roi_heuristic
from CACScoringLib.phantom import make_thorax_phantom


@pytest.mark.parametrize("seed", [0, 3, 7])
@pytest.mark.parametrize(("shape", "spacing"), [((48, 256, 256), (0.8, 0.8, 3.0)), ((40, 384, 384), (0.5, 0.5, 3.0))])
def test_roi_holds_all_coronary_calcium_and_crops(seed, shape, spacing):
    phantom = make_thorax_phantom(seed=seed, shape=shape, spacing=spacing, p_no_calcium=0.0)
    roi = heart_roi_heuristic(phantom.ct)
    assert roi.method == "heuristic" and not roi.warnings
    assert phantom.labels[roi.slices].sum() == phantom.labels.sum() > 0
    assert np.prod(roi.shape) < 0.75 * np.prod(phantom.ct.shape)


def test_no_lungs_falls_back_to_the_whole_image_with_a_warning():
    phantom = make_thorax_phantom(seed=1)
    phantom.ct.array[:] = 40.0  # a block of soft tissue
    roi = heart_roi_heuristic(phantom.ct)
    assert roi.method == "whole" and roi.shape == phantom.ct.shape
    assert "no lungs" in roi.warnings[0]


def test_calcium_where_arteries_together_outweigh_background():
    import torch

    from CACScoringLib.inference.pipeline import calcium_labels

    # Voxel 0: background 0.4, arteries split 0.2/0.2/0.1/0.1 -> calcium, LM (argmax alone would say background).
    # Voxel 1: background 0.6 -> background. Voxel 2: background 0.1, RCA 0.5 -> RCA.
    probs = torch.tensor([[0.4, 0.6, 0.1], [0.2, 0.1, 0.1], [0.2, 0.1, 0.2], [0.1, 0.1, 0.1], [0.1, 0.1, 0.5]])
    assert calcium_labels(probs, dim=0).tolist() == [1, 0, 4]
