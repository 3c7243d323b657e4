"""End to end: thorax phantom -> DICOM + COCA XML (the project's writers) -> import-coca -> the phantom's labels."""

import argparse

import numpy as np
import pytest

from CACScoringLib.cli import import_coca as import_coca_cli
from CACScoringLib.data.manifest import load_manifest
from CACScoringLib.io import read_ct, read_labels, write_dicom_series
from CACScoringLib.labels import ARTERIES, LABEL_ID
from CACScoringLib.phantom import make_thorax_phantom, write_coca_xml
from CACScoringLib.scoring import ScoringParams, score_volume

# (patient id, seed, shape (z, y, x), spacing (x, y, z) mm): small grids, calcium in several arteries
PATIENTS = [("101", 3, (20, 128, 128), (1.5, 1.5, 3.0)), ("102", 1, (24, 96, 96), (2.0, 2.0, 3.0))]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coca")
    gated = tmp / "coca" / "Gated_release_final"
    phantoms = {}
    for pid, seed, shape, spacing in PATIENTS:
        phantom = make_thorax_phantom(seed=seed, shape=shape, spacing=spacing, p_no_calcium=0.0)
        write_dicom_series(phantom.ct, gated / "patient" / pid / "1.2.3" / "series", patient_id=pid)
        write_coca_xml(phantom.ct, phantom.labels, gated / "calcium_xml" / f"{pid}.xml")
        phantoms[pid] = phantom
    out = tmp / "training"
    parser = argparse.ArgumentParser()
    import_coca_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["import-coca", str(tmp / "coca"), str(out), "--no-progress"])
    assert args.func(args) == 0
    return phantoms, load_manifest(out)


def test_labels_match_the_phantom(imported):
    phantoms, manifest = imported
    assert sorted(case.id for case in manifest.cases) == [pid for pid, *_ in PATIENTS]
    for case in manifest.cases:
        truth = phantoms[case.id].labels
        labels = read_labels(case.labels, read_ct(case.image))
        present = [artery for artery in ARTERIES if (truth == LABEL_ID[artery]).any()]
        assert len(present) >= 3
        for artery in present:
            mine, theirs = labels == LABEL_ID[artery], truth == LABEL_ID[artery]
            iou = (mine & theirs).sum() / (mine | theirs).sum()
            assert iou >= 0.8, f"{case.id} {artery}: IoU {iou:.3f}"
        assert not labels[truth == 0].any()


def test_reference_scores_match_the_phantom(imported):
    phantoms, manifest = imported
    for case in manifest.cases:
        phantom = phantoms[case.id]
        # the DICOM round trip rounds HU to integers: score the phantom's labels on the stored CT too
        on_stored_ct = score_volume(read_ct(case.image), phantom.labels, ScoringParams())
        for artery in ARTERIES:
            expected = on_stored_ct.arteries[artery]
            assert case.reference_scores[artery]["agatston"] == pytest.approx(expected.agatston, abs=1e-6)
            assert case.reference_scores[artery]["volume_mm3"] == pytest.approx(expected.volume_mm3, abs=1e-6)
            original = phantom.scores.arteries[artery].agatston
            assert case.reference_scores[artery]["agatston"] == pytest.approx(original, rel=0.05, abs=1.0)
        assert case.reference_scores["total"]["agatston"] > 0
        np.testing.assert_allclose(case.spacing, phantom.ct.spacing, atol=1e-4)
        assert case.shape == phantom.ct.shape
