"""Aerated share around a calcification: analytic cases, and the phantoms' coronary plaques stay under the cut."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from CACScoringLib.anatomy import MAX_AERATED_SHARE, aerated_share
from CACScoringLib.inference.lesions import find_candidates
from CACScoringLib.phantom import make_thorax_phantom


def ring_offsets(radius_mm: float, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) of the in-plane ring around one voxel: within radius_mm, not among its 8 neighbours."""
    r = int(np.ceil(radius_mm / spacing_mm))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    ring = ((dy**2 + dx**2) * spacing_mm**2 <= radius_mm**2) & ~((abs(dy) <= 1) & (abs(dx) <= 1))
    return dy[ring], dx[ring]


@pytest.mark.parametrize("spacing", [0.5, 0.8])
def test_a_speck_on_the_lung_border_has_the_lung_side_of_its_ring(spacing):
    hu = np.full((3, 64, 64), -100.0, np.float32)  # fat
    hu[:, :, :32] = -850.0  # lung left of column 32
    hu[1, 32, 32] = 400.0  # a one-voxel calcification on the border, fat side
    components = np.zeros(hu.shape, np.int32)
    components[1, 32, 32] = 1
    dy, dx = ring_offsets(5.0, spacing)
    expected = np.mean(dx < 0)  # the ring's voxels left of the speck are lung
    share = aerated_share(hu, (spacing, spacing, 3.0), components, np.array([1]))
    assert share[0] == pytest.approx(expected)
    assert 0.4 < share[0] < 0.5  # a little under half: the ring's middle column is on the fat side


def test_noise_in_fat_is_not_taken_for_lung_and_an_absent_component_scores_zero():
    rng = np.random.default_rng(0)
    hu = (rng.normal(-100.0, 200.0, (3, 64, 64))).astype(np.float32)  # noisy fat: 2% of voxels under -500
    hu[1, 30:33, 30:33] = 500.0
    components = np.zeros(hu.shape, np.int32)
    components[1, 30:33, 30:33] = 1
    shares = aerated_share(hu, (0.7, 0.7, 3.0), components, np.array([1, 2]))
    np.testing.assert_array_equal(shares, [0.0, 0.0])


@pytest.mark.parametrize("seed", [0, 5])
def test_phantom_coronary_plaques_have_little_lung_around_them(seed):
    phantom = make_thorax_phantom(seed=seed, p_no_calcium=0.0)
    candidates = find_candidates(phantom.ct.array, 130.0)
    coronary = np.flatnonzero(ndimage.maximum(phantom.labels > 0, candidates.components, np.arange(1, candidates.count + 1))) + 1
    assert len(coronary) >= 3
    shares = aerated_share(phantom.ct.array, phantom.ct.spacing, candidates.components, coronary)
    assert (shares <= MAX_AERATED_SHARE).all()
