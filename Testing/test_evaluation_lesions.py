"""orCaScore-style lesion detection on hand-built volumes."""

import math

import numpy as np
import pytest

from CACScoringLib.errors import InputError
from CACScoringLib.evaluation.lesions import ALL_ARTERIES, LesionCounts, lesion_counts, match_lesions
from CACScoringLib.evaluation.metrics import FOREGROUND
from CACScoringLib.labels import LABEL_ID

LAD, LCX, RCA = LABEL_ID["LAD"], LABEL_ID["LCX"], LABEL_ID["RCA"]
VOXEL_MM3 = 0.5 * 0.5 * 2.0


def _volume():
    return np.full((6, 12, 12), 50.0, dtype=np.float32), np.zeros((6, 12, 12), np.uint8), np.zeros((6, 12, 12), np.uint8)


def test_26_connectivity_joins_corner_neighbours_only():
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner-touching: one lesion
    mask[3, 3, 3] = True  # one empty voxel away from (1, 1, 1): another lesion
    counts = match_lesions(mask, np.zeros_like(mask), 1.0)
    assert counts.reference == 2
    assert counts.reference_mm3 == 3.0


def test_hand_built_case_counts_and_volumes():
    hu, reference, predicted = _volume()
    hu[:] = 300.0
    # LAD reference lesions: A (8 voxels) detected by a partly overlapping prediction, B (2 voxels) missed
    reference[1:3, 1:3, 1:3] = LAD
    predicted[2:4, 2:4, 2:4] = LAD  # 8 voxels, one shared with A
    reference[1, 8, 8:10] = LAD
    # a predicted LAD lesion far from any reference: false positive (3 voxels)
    predicted[5, 10, 0:3] = LAD
    # RCA: one reference lesion split into two predicted pieces, both overlapping it
    reference[4, 5, 0:7] = RCA
    predicted[4, 5, 0:2] = RCA
    predicted[4, 5, 4:7] = RCA
    counts = lesion_counts(hu, reference, predicted, VOXEL_MM3)

    lad = counts["LAD"]
    assert (lad.reference, lad.detected, lad.predicted, lad.true) == (2, 1, 2, 1)
    assert (lad.false_negatives, lad.false_positives) == (1, 1)
    assert lad.reference_mm3 == pytest.approx(10 * VOXEL_MM3)
    assert lad.detected_mm3 == pytest.approx(8 * VOXEL_MM3)
    assert lad.predicted_mm3 == pytest.approx(11 * VOXEL_MM3)
    assert lad.true_mm3 == pytest.approx(8 * VOXEL_MM3)
    metrics = lad.metrics()
    assert metrics["sensitivity"] == 0.5 and metrics["ppv"] == 0.5 and metrics["f1"] == 0.5
    assert metrics["sensitivity_volume"] == pytest.approx(0.8)
    assert metrics["ppv_volume"] == pytest.approx(8 / 11)
    assert metrics["f1_volume"] == pytest.approx(2 * 0.8 * (8 / 11) / (0.8 + 8 / 11))

    rca = counts["RCA"]
    assert (rca.reference, rca.detected, rca.predicted, rca.true) == (1, 1, 2, 2)
    assert rca.metrics()["f1"] == 1.0

    total = counts[ALL_ARTERIES]
    assert (total.reference, total.detected, total.predicted, total.true) == (3, 2, 4, 3)
    assert counts["LM"] == LesionCounts()


def test_artery_specific_vs_artery_agnostic_detection():
    hu, reference, predicted = _volume()
    hu[2, 4:6, 4:6] = 400.0
    reference[2, 4:6, 4:6] = LAD
    predicted[2, 4:6, 4:6] = LCX  # right place, wrong artery
    counts = lesion_counts(hu, reference, predicted, VOXEL_MM3)
    assert (counts["LAD"].reference, counts["LAD"].detected) == (1, 0)
    assert (counts["LCX"].predicted, counts["LCX"].true) == (1, 0)
    assert counts[ALL_ARTERIES].metrics()["f1"] == 0.0
    coronary = counts[FOREGROUND]
    assert (coronary.reference, coronary.detected, coronary.predicted, coronary.true) == (1, 1, 1, 1)


def test_threshold_rule_applies_to_both_sides():
    hu, reference, predicted = _volume()
    reference[1, 1:4, 1:4] = LAD  # labelled soft tissue (50 HU): no lesion
    hu[3, 1:4, 1:4] = 129.0
    predicted[3, 1:4, 1:4] = LAD  # just under 130 HU: no lesion
    hu[5, 8, 8] = 130.0
    reference[5, 8, 8] = RCA  # exactly 130 HU counts
    counts = lesion_counts(hu, reference, predicted, VOXEL_MM3)
    assert counts["LAD"].reference == 0 and counts["LAD"].predicted == 0
    assert counts["RCA"].reference == 1
    # a higher threshold removes the 130 HU lesion
    assert lesion_counts(hu, reference, predicted, VOXEL_MM3, threshold_hu=131.0)["RCA"].reference == 0


def test_min_voxels_drops_specks_on_both_sides():
    reference = np.zeros((3, 6, 6), bool)
    predicted = np.zeros_like(reference)
    reference[1, 1, 1] = True  # a one-voxel reference speck
    predicted[1, 1, 1:4] = True  # a 3-voxel prediction overlapping only that speck
    counts = match_lesions(reference, predicted, 1.0, min_voxels=2)
    assert (counts.reference, counts.predicted, counts.true) == (0, 1, 0)
    assert match_lesions(reference, predicted, 1.0).true == 1


def test_empty_conventions():
    nothing = LesionCounts().metrics()
    assert nothing["f1"] == 1.0 and nothing["f1_volume"] == 1.0
    assert math.isnan(nothing["sensitivity"]) and math.isnan(nothing["ppv"])
    missed = LesionCounts(reference=2, reference_mm3=4.0).metrics()
    assert missed["sensitivity"] == 0.0 and missed["f1"] == 0.0 and math.isnan(missed["ppv"])
    spurious = LesionCounts(predicted=1, predicted_mm3=1.0).metrics()
    assert spurious["ppv"] == 0.0 and spurious["f1"] == 0.0 and math.isnan(spurious["sensitivity"])


def test_ct_and_labels_of_different_shape_raise_input_error():
    labels = np.zeros((2, 3, 3), np.uint8)
    with pytest.raises(InputError, match="differ in shape"):
        lesion_counts(np.zeros((2, 3, 4), np.float32), labels, labels, 1.0)
