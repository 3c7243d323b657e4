"""COCA calcium XML parsing and ROI rasterising on hand-written plists and tiny volumes."""

import numpy as np
import pytest

from CACScoringLib.data.coca import parse_plist, rasterize_rois, read_calcium_xml
from CACScoringLib.errors import InputError
from CACScoringLib.labels import LABEL_ID
from CACScoringLib.volume import CTVolume

HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
)


def roi_xml(name, points_px, z=None, area=None):
    px = "".join(f"<string>({x}, {y})</string>" for x, y in points_px)
    parts = [f"<key>Name</key><string>{name}</string>", f"<key>Point_px</key><array>{px}</array>"]
    if z is not None:
        mm = "".join(f"<string>({x * 0.5}, {y * 0.5}, {z})</string>" for x, y in points_px)
        parts.append(f"<key>Point_mm</key><array>{mm}</array>")
    if area is not None:
        parts.append(f"<key>Area</key><real>{area}</real>")
    parts.append("<key>Max</key><real>512.0</real>")
    return "<dict>" + "".join(parts) + "</dict>"


def plist(images):
    """images: list of (ImageIndex, [roi_xml, ...])."""
    entries = "".join(
        f"<dict><key>ImageIndex</key><integer>{index}</integer>"
        f"<key>NumberOfROIs</key><integer>{len(rois)}</integer>"
        f"<key>ROIs</key><array>{''.join(rois)}</array></dict>"
        for index, rois in images
    )
    return (
        HEADER + f'<plist version="1.0"><dict><key>Images</key><array>{entries}</array></dict></plist>'
    ).encode()


def square(x0, y0, size):
    """Outline through pixel centres of a size x size pixel square: fills size*size pixels."""
    x1, y1 = x0 + size - 1, y0 + size - 1
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def tiny_ct(n_slices=6, origin_z=-20.0, increment=3.0):
    # 0.5 mm pixels, axial, slice k at z = origin_z + k * increment
    return CTVolume(
        array=np.zeros((n_slices, 32, 32), np.float32),
        spacing=(0.5, 0.5, increment),
        origin=(0.0, 0.0, origin_z),
    )


def test_parse_plist_converts_types():
    data = (
        HEADER + "<plist><dict><key>a</key><integer>3</integer><key>b</key><real>1.5</real>"
        "<key>c</key><true/><key>d</key><array><string>x</string><false/></array></dict></plist>"
    )
    assert parse_plist(data.encode()) == {"a": 3, "b": 1.5, "c": True, "d": ["x", False]}


def test_entity_bomb_is_refused():
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
        "<plist><dict><key>Images</key><string>&lol3;</string></dict></plist>"
    )
    with pytest.raises(InputError, match="entities"):
        parse_plist(bomb.encode())


def test_external_entity_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret", encoding="utf-8")
    xml = f'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file://{secret}">]><plist><string>&x;</string></plist>'
    with pytest.raises(InputError):
        parse_plist(xml.encode())


def test_malformed_xml_is_input_error():
    with pytest.raises(InputError, match="not well-formed"):
        parse_plist(b"<plist><dict><key>Images</key>")


def test_read_calcium_xml_from_file(tmp_path):
    path = tmp_path / "p1.xml"
    path.write_bytes(plist([(2, [roi_xml("Right Coronary Artery", square(3, 4, 3), z=-14.0, area=2.25)])]))
    rois, unreadable = read_calcium_xml(path)
    assert unreadable == []
    assert len(rois) == 1
    roi = rois[0]
    assert roi.image_index == 2 and roi.name == "Right Coronary Artery" and roi.area_mm2 == 2.25
    np.testing.assert_allclose(roi.points_px, [[3, 4], [5, 4], [5, 6], [3, 6]])
    np.testing.assert_allclose(roi.points_mm[:, 2], -14.0)


def test_xml_without_images_is_input_error():
    with pytest.raises(InputError, match="Images"):
        read_calcium_xml(
            (HEADER + "<plist><dict><key>Other</key><integer>1</integer></dict></plist>").encode()
        )


def test_malformed_points_are_reported_not_fatal():
    bad = "<dict><key>Name</key><string>Right Coronary Artery</string><key>Point_px</key><array><string>(1)</string></array></dict>"
    rois, unreadable = read_calcium_xml(plist([(0, [bad])]))
    assert rois == [] and len(unreadable) == 1 and "Point_px" in unreadable[0]["reason"]


def test_roi_by_point_mm_fills_the_square_on_the_nearest_slice():
    ct = tiny_ct()  # slices at z = -20, -17, -14, -11, -8, -5
    # z = -12.9 is nearest to slice 2 (-14; 1.1 mm away, under half the 3 mm increment)
    rois, _ = read_calcium_xml(
        plist([(0, [roi_xml("Left Anterior Descending Artery", square(10, 12, 4), z=-12.9, area=4.0)])])
    )
    labels, report = rasterize_rois(rois, ct)
    assert labels.dtype == np.uint8 and labels.shape == ct.shape
    expected = np.zeros(ct.shape, np.uint8)
    expected[2, 12:16, 10:14] = LABEL_ID["LAD"]
    np.testing.assert_array_equal(labels, expected)
    assert report.imported[0]["by"] == "Point_mm" and report.imported[0]["pixels"] == 16
    assert report.area_mismatches == []
    # ImageIndex 0 would be slice 5, so the report notes the disagreement
    assert report.image_index_disagreements[0]["slice_by_image_index"] == 5


def test_image_index_fallback_counts_from_the_last_slice():
    ct = tiny_ct(n_slices=6)
    rois, _ = read_calcium_xml(plist([(1, [roi_xml("Left Circumflex Artery", square(2, 2, 2))])]))
    labels, report = rasterize_rois(rois, ct)
    # ImageIndex 1 in a 6-slice series -> slice 6 - 1 - 1 = 4
    assert np.argwhere(labels).tolist() == [[4, 2, 2], [4, 2, 3], [4, 3, 2], [4, 3, 3]]
    assert set(np.unique(labels)) == {0, LABEL_ID["LCX"]}
    assert report.imported[0]["by"] == "ImageIndex"


def test_unknown_empty_and_out_of_range_rois_are_skipped_with_reasons():
    ct = tiny_ct(n_slices=4)
    rois, _ = read_calcium_xml(
        plist(
            [
                (0, [roi_xml("Aortic Valve", square(1, 1, 3))]),
                (1, [roi_xml("Right Coronary Artery", [])]),
                (9, [roi_xml("Right Coronary Artery", square(1, 1, 3))]),
                (0, [roi_xml("Right Coronary Artery", square(1, 1, 3), z=100.0)]),
            ]
        )
    )
    labels, report = rasterize_rois(rois, ct)
    assert not labels.any()
    reasons = [entry["reason"] for entry in report.skipped]
    assert len(reasons) == 4
    assert "unknown ROI name 'Aortic Valve'" in reasons[0]
    assert "empty ROI" in reasons[1]
    assert "ImageIndex 9" in reasons[2]
    assert "outside" in reasons[3]


def test_two_rois_on_one_slice_are_combined_and_conflicts_keep_the_higher_label():
    ct = tiny_ct(n_slices=3)
    rois, _ = read_calcium_xml(
        plist(
            [
                (
                    0,
                    [
                        roi_xml("Left Coronary Artery", square(0, 0, 4)),  # LM, pixels x 0..3, y 0..3
                        roi_xml("Left Anterior Descending Artery", square(2, 0, 4)),  # LAD, overlaps x 2..3
                        roi_xml("Left Coronary Artery", square(20, 20, 2)),  # a second LM lesion
                    ],
                )
            ]
        )
    )
    labels, report = rasterize_rois(rois, ct)
    k = 2  # ImageIndex 0 of 3 slices
    assert (labels[k, 0:4, 0:2] == LABEL_ID["LM"]).all()
    assert (labels[k, 0:4, 2:6] == LABEL_ID["LAD"]).all()
    assert (labels[k, 20:22, 20:22] == LABEL_ID["LM"]).all()
    assert int((labels > 0).sum()) == 4 * 6 + 4
    assert report.conflicts == [{"slice": k, "labels": ["LAD", "LM"], "kept": "LAD", "pixels": 8}]


def test_conflict_rule_does_not_depend_on_roi_order():
    ct = tiny_ct(n_slices=1)
    a = roi_xml("Right Coronary Artery", square(0, 0, 4))
    b = roi_xml("Left Circumflex Artery", square(2, 2, 4))
    first, _ = rasterize_rois(read_calcium_xml(plist([(0, [a, b])]))[0], ct)
    second, _ = rasterize_rois(read_calcium_xml(plist([(0, [b, a])]))[0], ct)
    np.testing.assert_array_equal(first, second)
    assert first[0, 3, 3] == LABEL_ID["RCA"]


def test_area_mismatch_is_flagged_but_imported():
    ct = tiny_ct(n_slices=2)  # pixel area 0.25 mm2
    good = roi_xml("Right Coronary Artery", square(0, 0, 6), z=-20.0, area=36 * 0.25)
    bad = roi_xml("Right Coronary Artery", square(10, 10, 6), z=-20.0, area=360 * 0.25)
    labels, report = rasterize_rois(read_calcium_xml(plist([(1, [good, bad])]))[0], ct)
    assert int((labels[0] == LABEL_ID["RCA"]).sum()) == 72
    assert [entry["roi"] for entry in report.area_mismatches] == [1]
    assert report.area_mismatches[0]["pixels"] == 36 and report.area_mismatches[0]["expected_pixels"] == 360


def test_sub_pixel_outline_marks_its_vertex_pixel():
    ct = tiny_ct(n_slices=1)
    # a 0.2-pixel triangle around pixel (x=7, y=5) covers no pixel centre exactly
    outline = [(6.9, 4.9), (7.1, 4.9), (7.0, 4.8)]
    labels, report = rasterize_rois(
        read_calcium_xml(plist([(0, [roi_xml("Right Coronary Artery", outline)])]))[0], ct
    )
    assert np.argwhere(labels).tolist() == [[0, 5, 7]]
