"""Heart region and blood pool, on the project's phantoms and on the real scans of ../shared/realct and lung1."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from CACScoringLib.anatomy import assess_contrast, find_heart
from CACScoringLib.inference.lesions import find_candidates
from CACScoringLib.io import read_ct
from CACScoringLib.phantom import make_thorax_phantom

REPO = Path(__file__).resolve().parents[1]
QRM_ARCHIVE = REPO.parent / "shared" / "realct" / "qrm_canon_large_rep1.tar.xz"
LUNG1 = REPO / ".cache" / "realct" / "lung1_image.nrrd"  # scripts/fetch_realct.sh


def coronary_lesions_outside(phantom, heart) -> int:
    """Reference lesions (26-connected, per label) with most of their voxels outside the region."""
    inside = heart.on_ct_grid()
    outside = 0
    for artery in np.unique(phantom.labels[phantom.labels > 0]):
        lesions, count = ndimage.label(phantom.labels == artery, structure=np.ones((3, 3, 3)))
        share = ndimage.mean(inside, lesions, range(1, count + 1))
        outside += int((np.asarray(share) < 0.5).sum())
    return outside


@pytest.mark.parametrize("seed", [0, 2, 3, 5])
def test_region_holds_the_coronary_plaques_and_not_the_body(seed):
    phantom = make_thorax_phantom(seed=seed, p_no_calcium=0.0)
    heart, reason = find_heart(phantom.ct)
    assert reason is None
    assert coronary_lesions_outside(phantom, heart) == 0
    region = heart.on_ct_grid()
    assert region.sum() * phantom.ct.voxel_volume_mm3 < 1.8e6  # a heart with its margins (< 1.8 L), not the chest
    assert (region & (phantom.ct.array < -600)).sum() < 0.1 * region.sum()  # a rim of lung at most
    # Phantom blood 40 HU, myocardium 50 HU: the measured pool lies between them give or take the noise.
    assert 30.0 < heart.blood_pool_hu < 60.0


def test_contrast_enhanced_blood_pool_is_measured_and_flagged():
    phantom = make_thorax_phantom(seed=3, noise_hu=10.0)
    heart, _ = find_heart(phantom.ct)
    plain = assess_contrast(phantom.ct, heart=heart)
    assert not plain.enhanced and plain.warning() is None
    enhanced = phantom.ct.array.copy()
    blood = heart.on_ct_grid() & (np.abs(phantom.ct.array - 40.0) < 30.0)  # blood pool and myocardium
    enhanced[blood] += 260.0
    check = assess_contrast(phantom.ct.with_array(enhanced))
    assert check.enhanced and 250.0 < check.blood_pool_hu < 330.0
    assert f"{check.blood_pool_hu:.0f} HU" in check.warning()
    assert not assess_contrast(phantom.ct.with_array(enhanced), threshold_hu=400.0).enhanced  # overridable


def test_no_lungs_is_a_reason_not_a_region():
    phantom = make_thorax_phantom(seed=1)
    heart, reason = find_heart(phantom.ct.with_array(np.full(phantom.ct.shape, 40.0, np.float32)))
    assert heart is None and reason == "no lungs found"
    assert assess_contrast(phantom.ct.with_array(np.full(phantom.ct.shape, 40.0, np.float32))).blood_pool_hu is None


@pytest.fixture(scope="module")
def qrm_ct(tmp_path_factory):
    if not QRM_ARCHIVE.exists():
        pytest.skip(f"real QRM scan not present at {QRM_ARCHIVE}")
    folder = tmp_path_factory.mktemp("qrm")
    with tarfile.open(QRM_ARCHIVE) as archive:
        archive.extractall(folder, filter="data")
    return read_ct(folder / "qrm_canon_large_rep1")


def test_real_qrm_scan_region_is_the_cardiac_insert_without_contrast(qrm_ct):
    heart, reason = find_heart(qrm_ct)
    assert reason is None
    check = assess_contrast(qrm_ct, heart=heart)
    assert not check.enhanced and 20.0 < check.blood_pool_hu < 120.0  # the insert's tissue-equivalent resin
    # Every calcium insert lies in the region: compact blobs far above the resin, smaller than bone (a 5 mm
    # insert 9 mm long is about 250 voxels of 0.488 x 0.488 x 3 mm; the vertebra is thousands).
    candidates = find_candidates(qrm_ct.array, 400.0)
    inserts = np.flatnonzero((candidates.sizes[1:] >= 20) & (candidates.sizes[1:] <= 1000)) + 1
    assert len(inserts) >= 3  # at least the three 5 mm inserts
    assert (heart.share_inside(candidates.components, candidates.count)[inserts] == 1.0).all()


@pytest.mark.skipif(not LUNG1.exists(), reason="lung1 not fetched (bash scripts/fetch_realct.sh)")
def test_real_chest_ct_lung1_region_stops_below_the_neck_and_hila():
    ct = read_ct(LUNG1)
    heart, reason = find_heart(ct)
    assert reason is None
    z0, z1 = heart.bounds()[0]
    # lung1 (5 mm slices, slice 0 inferior): heart from the diaphragm to the aortic root at slices 12-14,
    # hila and aortic arch above slice 16, the neck above 35 (read off the images).
    assert z0 <= 2 and 14 <= z1 <= 17
    assert 20.0 < heart.blood_pool_hu < 60.0 and not assess_contrast(ct, heart=heart).enhanced


def test_clear_outside_zeroes_labels_on_coarse_voxels_outside_only():
    from CACScoringLib.anatomy import HeartRegion

    mask = np.zeros((2, 3, 3), bool)
    mask[1, 1, 1] = True  # CT voxels z 2-3, y 2-3, x 2-3 with steps (2, 2, 2)
    heart = HeartRegion(mask, (2, 2, 2), (4, 6, 6), blood_pool_hu=40.0)
    labels = np.zeros((4, 6, 6), np.uint8)
    labels[1:4, 2, 2:5] = 3  # 9 voxels; inside: z 2-3 at x 2-3 = 4 voxels
    assert heart.clear_outside(labels, depth=3) == 5  # slabs that cut the coarse grid
    expected = np.zeros_like(labels)
    expected[2:4, 2, 2:4] = 3
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.slow
@pytest.mark.skipif(not LUNG1.exists(), reason="lung1 not fetched (bash scripts/fetch_realct.sh)")
def test_default_model_on_lung1_labels_nothing_outside_the_heart_nor_the_hilar_node():
    from CACScoringLib.inference import segment

    ct = read_ct(LUNG1)
    segmentation = segment(ct, device="cpu")
    labelled = segmentation.labels > 0
    assert not (labelled & ~segmentation.roi.heart.on_ct_grid()).any()
    # Read off the overlays: a calcified hilar node beside the right main bronchus (slice 12, labelled RCA
    # before the lung rule) and the probable left main on the aortic root's posterior-left (slices 13-15).
    assert not labelled[12, 360:385, 205:230].any()
    assert labelled[13:16, 315:340, 285:315].any()
