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
    # The box crops; where a phantom's heart rests on the liver dome its lowest slices take some liver in.
    assert np.prod(roi.shape) < 0.8 * np.prod(phantom.ct.shape)
    assert roi.heart.on_ct_grid().sum() * phantom.ct.voxel_volume_mm3 < 1.8e6  # a heart with its margins, < 1.8 L


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


def _strictly_inside_hull_of_pixel_corners(mask: np.ndarray) -> np.ndarray:
    """Reference: the hull of every corner of every mask pixel, tested at every pixel centre."""
    from scipy.spatial import ConvexHull

    rows, cols = np.nonzero(mask)
    corners = np.concatenate([np.stack([rows + dr, cols + dc], 1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)])
    facets = ConvexHull(corners).equations
    grid = np.stack(np.mgrid[: mask.shape[0], : mask.shape[1]], -1).reshape(-1, 2)
    inside = (grid @ facets[:, :2].T + facets[:, 2]).max(axis=1) < -1e-9
    return inside.reshape(mask.shape) | mask


@pytest.mark.parametrize("seed", range(6))
def test_convex_hull_mask_is_the_hull_of_all_pixel_corners(seed):
    from skimage.draw import ellipse
    from skimage.morphology import convex_hull_image

    from CACScoringLib.anatomy import convex_hull_mask

    rng = np.random.default_rng(seed)
    mask = np.zeros((96, 80), bool)
    for _ in range(3):
        rr, cc = ellipse(*rng.integers(10, 70, 2), *rng.integers(2, 20, 2), mask.shape, rotation=rng.uniform(0, 3))
        mask[rr, cc] = True
    mask &= rng.random(mask.shape) < 0.6  # ragged rows: the row-end shortcut must still give the full hull
    hull = convex_hull_mask(mask)
    np.testing.assert_array_equal(hull, _strictly_inside_hull_of_pixel_corners(mask))
    assert not (convex_hull_image(mask) & ~hull).any()  # skimage's hull never reaches further


def test_convex_hull_mask_degenerate_masks():
    from CACScoringLib.anatomy import convex_hull_mask

    empty = np.zeros((5, 6), bool)
    assert not convex_hull_mask(empty).any()
    line = empty.copy()
    line[2, 1:5] = True
    np.testing.assert_array_equal(convex_hull_mask(line), line)
    diagonal = np.eye(5, dtype=bool)
    np.testing.assert_array_equal(convex_hull_mask(diagonal), diagonal)  # centres off the diagonal lie on edges
    corners = empty.copy()
    corners[[0, 0, 4, 4], [0, 5, 0, 5]] = True
    assert convex_hull_mask(corners).all()
