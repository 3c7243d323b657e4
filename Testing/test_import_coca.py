"""COCA import end to end on DICOM series and calcium XML written into tmp_path.

The XML here is written by hand from known squares of calcium, so the expected label maps and
scores are known without the importer.
"""

import argparse
import json

import numpy as np
import openpyxl
import pytest

from CACScoringLib.cli import import_coca as import_coca_cli
from CACScoringLib.data.coca import import_coca_gated, import_coca_nongated
from CACScoringLib.data.manifest import load_manifest
from CACScoringLib.errors import InputError
from CACScoringLib.io import read_ct, read_labels, write_dicom_series
from CACScoringLib.labels import LABEL_ID
from CACScoringLib.volume import CTVolume

SPACING = (0.7, 0.7, 3.0)
ORIGIN = (-10.0, -20.0, -100.0)
N_SLICES, SIZE = 6, 40
# (artery, slice, row, column, side, HU): squares of calcium
LESIONS = [("LAD", 1, 5, 5, 4, 300.0), ("RCA", 3, 20, 25, 5, 450.0), ("LM", 4, 30, 8, 3, 200.0)]
COCA_NAMES = {
    "LM": "Left Coronary Artery",
    "LAD": "Left Anterior Descending Artery",
    "LCX": "Left Circumflex Artery",
    "RCA": "Right Coronary Artery",
}


def make_ct(n_slices=N_SLICES, origin=ORIGIN):
    array = np.full((n_slices, SIZE, SIZE), 40.0, np.float32)
    truth = np.zeros(array.shape, np.uint8)
    for artery, k, r, c, side, hu in LESIONS:
        if k < n_slices:
            array[k, r : r + side, c : c + side] = hu
            truth[k, r : r + side, c : c + side] = LABEL_ID[artery]
    return CTVolume(array=array, spacing=SPACING, origin=origin), truth


def coca_xml(lesions, n_slices=N_SLICES, with_mm=True, area_scale=1.0, extra_roi="", with_mean=False):
    """Calcium XML as OsiriX writes it; ImageIndex i is slice n-1-i; outlines pass through pixel centres."""
    images = []
    for artery, k, r, c, side, hu in lesions:
        outline = [(c, r), (c + side - 1, r), (c + side - 1, r + side - 1), (c, r + side - 1)]
        px = "".join(f"<string>({x:.6f}, {y:.6f})</string>" for x, y in outline)
        z = ORIGIN[2] + k * SPACING[2]
        mm = "".join(
            f"<string>({ORIGIN[0] + x * SPACING[0]:.6f}, {ORIGIN[1] + y * SPACING[1]:.6f}, {z:.6f})</string>"
            for x, y in outline
        )
        area = side * side * SPACING[0] * SPACING[1] * area_scale
        roi = (
            f"<dict><key>Area</key><real>{area}</real><key>Max</key><real>500</real>"
            + (f"<key>Mean</key><real>{hu}</real>" if with_mean else "")  # the square is uniform
            + f"<key>Name</key><string>{COCA_NAMES[artery]}</string>"
            f"<key>NumberOfPoints</key><integer>4</integer>"
            + (f"<key>Point_mm</key><array>{mm}</array>" if with_mm else "")
            + f"<key>Point_px</key><array>{px}</array></dict>"
        )
        images.append(
            f"<dict><key>ImageIndex</key><integer>{n_slices - 1 - k}</integer>"
            f"<key>NumberOfROIs</key><integer>1</integer><key>ROIs</key><array>{roi}{extra_roi}</array></dict>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        f'<plist version="1.0"><dict><key>Images</key><array>{"".join(images)}</array></dict></plist>\n'
    )


def gated_root(tmp_path):
    return tmp_path / "coca" / "Gated_release_final"


def add_patient(tmp_path, pid, xml=None, series=True, ct=None):
    root = gated_root(tmp_path)
    (root / "calcium_xml").mkdir(parents=True, exist_ok=True)
    (root / "patient").mkdir(parents=True, exist_ok=True)
    if series:
        ct = ct if ct is not None else make_ct()[0]
        write_dicom_series(ct, root / "patient" / pid / "series_a", patient_id=pid)
    if xml is not None:
        (root / "calcium_xml" / f"{pid}.xml").write_text(xml)


def hand_agatston():
    """Agatston of LESIONS by definition: area mm2 x density weight (3 mm slices, no normalisation)."""
    weight = {200.0: 2, 300.0: 3, 450.0: 4}
    return {
        artery: side * side * SPACING[0] * SPACING[1] * weight[hu] for artery, _, _, _, side, hu in LESIONS
    }


def test_gated_import_reproduces_labels_and_scores(tmp_path):
    add_patient(tmp_path, "p1", coca_xml(LESIONS))
    out = tmp_path / "out"
    report = import_coca_gated(tmp_path / "coca", out, progress=False)
    assert report["summary"]["imported"] == 1 and report["summary"]["rois_imported"] == 3
    assert report["summary"]["area_mismatches"] == 0 and report["summary"]["image_index_disagreements"] == 0

    manifest = load_manifest(out)
    assert manifest.source == "coca-gated"
    case = manifest.cases[0]
    assert case.id == "p1" and case.shape == (N_SLICES, SIZE, SIZE)
    np.testing.assert_allclose(case.spacing, SPACING, atol=1e-4)
    ct = read_ct(case.image)
    np.testing.assert_array_equal(read_labels(case.labels, ct), make_ct()[1])

    expected = hand_agatston()
    for artery in ("LM", "LAD", "RCA"):
        assert case.reference_scores[artery]["agatston"] == pytest.approx(expected[artery], rel=1e-4)
    side_voxels = {a: side * side for a, _, _, _, side, _ in LESIONS}
    assert case.reference_scores["RCA"]["volume_mm3"] == pytest.approx(
        side_voxels["RCA"] * 0.7 * 0.7 * 3.0, rel=1e-4
    )
    assert case.reference_scores["LCX"]["agatston"] == 0.0
    assert case.reference_scores["total"]["agatston"] == pytest.approx(sum(expected.values()), rel=1e-4)
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["patients"][0]["status"] == "imported"


def test_image_index_fallback_gives_the_same_labels(tmp_path):
    add_patient(tmp_path, "p1", coca_xml(LESIONS, with_mm=False))
    out = tmp_path / "out"
    report = import_coca_gated(tmp_path / "coca", out, progress=False)
    assert {roi["by"] for roi in report["patients"][0]["rois_imported"]} == {"ImageIndex"}
    case = load_manifest(out).cases[0]
    np.testing.assert_array_equal(read_labels(case.labels, read_ct(case.image)), make_ct()[1])


def test_flags_and_skips_are_reported_per_patient(tmp_path):
    unknown = "<dict><key>Name</key><string>Aorta</string><key>Point_px</key><array><string>(1, 1)</string></array></dict>"
    add_patient(tmp_path, "area", coca_xml(LESIONS[:1], area_scale=5.0, extra_roi=unknown))
    add_patient(tmp_path, "xml-only", coca_xml(LESIONS), series=False)
    add_patient(tmp_path, "dicom-only", xml=None)
    bomb = '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><plist><string>&b;</string></plist>'
    add_patient(tmp_path, "bomb", bomb)
    out = tmp_path / "out"
    report = import_coca_gated(tmp_path / "coca", out, progress=False)
    by_id = {entry["id"]: entry for entry in report["patients"]}
    assert by_id["area"]["status"] == "imported"
    assert len(by_id["area"]["area_mismatches"]) == 1
    assert by_id["area"]["rois_skipped"][0]["reason"] == "unknown ROI name 'Aorta'"
    assert by_id["xml-only"]["status"] == "skipped" and "no DICOM folder" in by_id["xml-only"]["reason"]
    assert by_id["dicom-only"]["status"] == "skipped" and "no calcium XML" in by_id["dicom-only"]["reason"]
    assert by_id["bomb"]["status"] == "skipped" and "entities" in by_id["bomb"]["reason"]
    assert report["summary"] == {
        "patients": 4,
        "imported": 1,
        "skipped": 3,
        "rois_imported": 1,
        "rois_skipped": 1,
        "area_mismatches": 1,
        "conflicts": 0,
        "image_index_disagreements": 0,
    }
    assert [case.id for case in load_manifest(out).cases] == ["area"]


def test_missing_xml_as_negative_imports_an_empty_label_map(tmp_path):
    add_patient(tmp_path, "dicom-only", xml=None)
    out = tmp_path / "out"
    import_coca_gated(tmp_path / "coca", out, missing_xml_as_negative=True, progress=False)
    case = load_manifest(out).cases[0]
    assert not read_labels(case.labels, read_ct(case.image)).any()
    assert case.reference_scores["total"]["agatston"] == 0.0


def test_patient_with_two_series_takes_the_one_the_xml_fits(tmp_path):
    add_patient(tmp_path, "p1", coca_xml(LESIONS))
    # a longer second series far away along z: more slices, but no ROI lands in it
    far, _ = make_ct(n_slices=9, origin=(ORIGIN[0], ORIGIN[1], 200.0))
    write_dicom_series(far, gated_root(tmp_path) / "patient" / "p1" / "series_b", patient_id="p1")
    out = tmp_path / "out"
    report = import_coca_gated(tmp_path / "coca", out, progress=False)
    entry = report["patients"][0]
    assert sorted(note["slices"] for note in entry["series_candidates"]) == [N_SLICES, 9]
    assert entry["slices"] == N_SLICES and len(entry["rois_imported"]) == 3
    case = load_manifest(out).cases[0]
    np.testing.assert_array_equal(read_labels(case.labels, read_ct(case.image)), make_ct()[1])


def test_without_fitting_rois_the_series_with_most_slices_wins(tmp_path):
    add_patient(tmp_path, "p1", xml=None)
    longer, _ = make_ct(n_slices=8, origin=(ORIGIN[0], ORIGIN[1], 200.0))
    write_dicom_series(longer, gated_root(tmp_path) / "patient" / "p1" / "series_b", patient_id="p1")
    report = import_coca_gated(
        tmp_path / "coca", tmp_path / "out", missing_xml_as_negative=True, progress=False
    )
    assert report["patients"][0]["slices"] == 8


def test_not_a_coca_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match="Gated_release_final"):
        import_coca_gated(tmp_path, tmp_path / "out", progress=False)


def write_scores(path, rows):
    workbook = openpyxl.Workbook()
    workbook.active.append(["filename", "LCA", "LAD", "LCX", "RCA", "total"])
    for row in rows:
        workbook.active.append(list(row))
    workbook.save(path)


def test_nongated_import_keeps_spreadsheet_scores_and_flags_sums(tmp_path):
    root = tmp_path / "nongated"
    ct, _ = make_ct()
    write_dicom_series(ct, root / "deidentified_nongated" / "a1" / "a1", patient_id="a1")
    write_dicom_series(ct, root / "deidentified_nongated" / "b2" / "b2", patient_id="b2")
    write_scores(
        root / "scores.xlsx", [("a1", 10, 20, 0, 5, 35), ("b2", 1, 2, 3, 4, 50), ("c3", 0, 0, 0, 0, 0)]
    )
    out = tmp_path / "out"
    report = import_coca_nongated(root, out, progress=False)
    assert report["summary"] == {"patients": 3, "imported": 2, "skipped": 1, "rows_with_problems": 1}
    by_id = {entry["id"]: entry for entry in report["patients"]}
    assert by_id["b2"]["problems"] and by_id["a1"]["problems"] == []
    assert "no folder named c3" in by_id["c3"]["reason"]
    manifest = load_manifest(out)
    a1 = manifest.cases[0]
    assert a1.labels is None and a1.shape == (N_SLICES, SIZE, SIZE)
    assert a1.reference_scores["LM"] == {"agatston": 10.0}
    assert a1.reference_scores["total"] == {"agatston": 35.0}
    np.testing.assert_allclose(read_ct(a1.image).array, ct.array)


def run_cli(argv):
    parser = argparse.ArgumentParser()
    import_coca_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_imports_and_prints_a_summary(tmp_path, capsys):
    add_patient(tmp_path, "p1", coca_xml(LESIONS))
    add_patient(tmp_path, "p2", coca_xml(LESIONS), series=False)
    out = tmp_path / "out"
    assert run_cli(["import-coca", str(tmp_path / "coca"), str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "imported 1" in printed and "skipped p2: no DICOM folder patient/p2" in printed
    assert (out / "manifest.json").is_file()
    with pytest.raises(InputError, match="no patient was imported"):
        run_cli(
            [
                "import-coca",
                str(tmp_path / "coca"),
                str(tmp_path / "out2"),
                "--patients",
                "p2",
                "--no-progress",
            ]
        )


def test_cacscoring_main_exits_2_on_a_folder_that_is_not_coca(tmp_path, capsys):
    from CACScoringLib.cli import main

    assert main(["import-coca", str(tmp_path), str(tmp_path / "out"), "--no-progress"]) == 2
    assert "Gated_release_final" in capsys.readouterr().err


def test_one_bad_patient_is_skipped_with_its_reason_and_the_others_imported(tmp_path):
    deep = "<array>" * 5000 + "</array>" * 5000
    add_patient(tmp_path, "deep", f'<?xml version="1.0"?><plist><dict><key>Images</key>{deep}</dict></plist>')
    # the first image's ROIs become an integer (its ROI list moves to an ignored key)
    rois_int = coca_xml(LESIONS).replace("<key>ROIs</key>", "<key>ROIs</key><integer>7</integer><key>Moved</key>", 1)
    add_patient(tmp_path, "rois-int", rois_int)
    add_patient(tmp_path, "inf", coca_xml(LESIONS).replace(f"{ORIGIN[2] + 1 * SPACING[2]:.6f})", "1e999)", 1))
    add_patient(tmp_path, "good", coca_xml(LESIONS))
    out = tmp_path / "out"
    report = import_coca_gated(tmp_path / "coca", out, progress=False)
    by_id = {entry["id"]: entry for entry in report["patients"]}
    assert by_id["deep"]["status"] == "skipped" and "more than 64 levels deep" in by_id["deep"]["reason"]
    assert by_id["rois-int"]["status"] == "skipped" and "ROIs is int, not a list" in by_id["rois-int"]["reason"]
    assert by_id["inf"]["status"] == "skipped" and "Point_mm is not a list of finite" in by_id["inf"]["reason"]
    assert by_id["good"]["status"] == "imported"
    assert [case.id for case in load_manifest(out).cases] == ["good"]
    assert report["summary"]["imported"] == 1 and report["summary"]["skipped"] == 3


def other_patient_series(tmp_path, pid, patient_id, uid):
    """A calcium-free CT of the same geometry as patient `pid`'s, put into its folder (a filing mistake)."""
    other, _ = make_ct()
    other = other.with_array(np.full(other.shape, 40.0, np.float32))
    write_dicom_series(other, gated_root(tmp_path) / "patient" / pid / "series_z", patient_id=patient_id,
                       series_uid=uid)


def imported_labels(out):
    case = load_manifest(out).cases[0]
    return read_labels(case.labels, read_ct(case.image)), case


def test_another_patients_series_of_the_same_geometry_is_told_apart_by_patient_id(tmp_path):
    add_patient(tmp_path, "p1", coca_xml(LESIONS))
    other_patient_series(tmp_path, "p1", "p2", uid="1.2.3")  # the smaller UID, which used to win the tie
    out = tmp_path / "out"
    report = import_coca_gated(tmp_path / "coca", out, progress=False)
    assert report["patients"][0]["series_instance_uid"] != "1.2.3"
    labels, case = imported_labels(out)
    np.testing.assert_array_equal(labels, make_ct()[1])
    assert case.reference_scores["total"]["agatston"] == pytest.approx(sum(hand_agatston().values()), rel=1e-4)


def test_without_telling_patient_ids_the_rois_mean_hu_pick_the_series(tmp_path):
    root = gated_root(tmp_path)
    (root / "calcium_xml").mkdir(parents=True)
    (root / "calcium_xml" / "p1.xml").write_text(coca_xml(LESIONS, with_mean=True))
    write_dicom_series(make_ct()[0], root / "patient" / "p1" / "series_a", patient_id="ANON-17", series_uid="1.2.9")
    other_patient_series(tmp_path, "p1", "ANON-4", uid="1.2.3")
    out = tmp_path / "out"
    report = import_coca_gated(tmp_path / "coca", out, progress=False)
    entry = report["patients"][0]
    assert entry["series_instance_uid"] == "1.2.9"
    notes = {note["series_instance_uid"]: note for note in entry["series_candidates"]}
    assert (notes["1.2.9"]["rois_hu_agreeing"], notes["1.2.3"]["rois_hu_agreeing"]) == (3, 0)
    np.testing.assert_array_equal(imported_labels(out)[0], make_ct()[1])


def test_ambiguous_series_or_a_series_the_xml_does_not_match_skip_the_patient(tmp_path):
    root = gated_root(tmp_path)
    (root / "calcium_xml").mkdir(parents=True)
    (root / "calcium_xml" / "p1.xml").write_text(coca_xml(LESIONS))  # no mean HU to tell them apart
    write_dicom_series(make_ct()[0], root / "patient" / "p1" / "series_a", patient_id="ANON-17")
    other_patient_series(tmp_path, "p1", "ANON-4", uid="1.2.3")
    (root / "calcium_xml" / "p2.xml").write_text(coca_xml(LESIONS, with_mean=True))
    other_patient_series(tmp_path, "p2", "p2", uid="1.2.4")  # only a calcium-free CT: not the one annotated
    report = import_coca_gated(tmp_path / "coca", tmp_path / "out", progress=False)
    by_id = {entry["id"]: entry for entry in report["patients"]}
    assert by_id["p1"]["status"] == "skipped" and "fit the calcium XML equally" in by_id["p1"]["reason"]
    assert "1.2.3 (PatientID ANON-4)" in by_id["p1"]["reason"]
    assert by_id["p2"]["status"] == "skipped" and "mean HU of none of the 3 calcium ROIs" in by_id["p2"]["reason"]
