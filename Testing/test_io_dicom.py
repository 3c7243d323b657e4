"""DICOM series: writer/reader round trips, agreement with SimpleITK's series reader, ordering, selection."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from io_helpers import (
    dicom_files,
    edit_slices,
    jpeg_lossless_copy,
    random_ct,
    rotation,
    sitk_series_reader,
    write_study,
)

from CACScoringLib.errors import InputError
from CACScoringLib.io import SeriesSummary, list_series, read_ct, write_dicom_series
from CACScoringLib.io.dicom import choose_series, default_workers
from CACScoringLib.volume import CTVolume


def assert_same_geometry(ct: CTVolume, spacing, origin, direction, atol=1e-6):
    np.testing.assert_allclose(ct.spacing, spacing, atol=atol)
    np.testing.assert_allclose(ct.origin, origin, atol=atol)
    np.testing.assert_allclose(ct.direction, direction, atol=atol)


def test_round_trip_keeps_hu_geometry_and_scan_info(tmp_path):
    ct = random_ct()
    uid = write_dicom_series(ct, tmp_path, kvp=100.0, slice_thickness=3.0, patient_id="P7")
    back = read_ct(tmp_path)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, ct.array)
    assert_same_geometry(back, ct.spacing, ct.origin, ct.direction)
    info = back.info
    assert (info.kvp, info.slice_thickness_mm, info.slice_increment_mm) == (100.0, 3.0, 2.5)
    assert (info.modality, info.manufacturer, info.patient_id) == ("CT", "CACScoring phantom", "P7")
    assert info.series_instance_uid == uid
    assert info.warnings == []


def test_written_files_are_valid_ct_image_storage(tmp_path):
    ct = random_ct(shape=(2, 4, 6), spacing=(0.5, 0.75, 3.0))
    write_dicom_series(ct, tmp_path)
    ds = pydicom.dcmread(dicom_files(tmp_path)[0])
    assert ds.file_meta.MediaStorageSOPClassUID == pydicom.uid.CTImageStorage == ds.SOPClassUID
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.PixelRepresentation) == (4, 6, 16, 1)
    assert [float(v) for v in ds.PixelSpacing] == [0.75, 0.5]  # between rows (y), then columns (x)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert ds.pixel_array.dtype == np.int16
    np.testing.assert_array_equal(ds.pixel_array, ct.array[0] + 1024)


def test_hu_are_rounded_to_integers(tmp_path):
    ct = random_ct(shape=(2, 3, 3))
    ct = ct.with_array(ct.array + np.float32(0.3))
    write_dicom_series(ct, tmp_path)
    np.testing.assert_array_equal(read_ct(tmp_path).array, np.rint(ct.array))


@pytest.mark.parametrize(
    "direction",
    [
        np.eye(3),
        rotation((0, 0, 1), 30.0),  # in-plane rotation: still axial
        np.diag([1.0, -1.0, -1.0]),  # feet-first style: normal along -z, positions decrease
        np.diag([-1.0, -1.0, 1.0]),
    ],
    ids=["identity", "rotated-in-plane", "normal-minus-z", "flipped-xy"],
)
def test_geometry_matches_simpleitk_series_reader(tmp_path, direction):
    ct = random_ct(direction=tuple(direction.ravel()))
    write_dicom_series(ct, tmp_path)
    ours = read_ct(tmp_path)
    reference = sitk_series_reader(tmp_path)
    assert_same_geometry(ours, reference.GetSpacing(), reference.GetOrigin(), reference.GetDirection())
    np.testing.assert_array_equal(ours.array, sitk.GetArrayFromImage(reference))
    np.testing.assert_array_equal(ours.array, ct.array)


def write_with_simpleitk(ct: CTVolume, folder):
    """A series written slice by slice by SimpleITK/GDCM, the way SimpleITK's documentation shows."""
    image = ct.to_sitk(ct.array.astype(np.int16))
    series_uid = pydicom.uid.generate_uid()
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0::3], *direction[1::3])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0018|0050": str(ct.spacing[2]),
        }
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"sitk_{k:03d}.dcm"))
        writer.Execute(piece)


def test_reads_series_written_by_simpleitk(tmp_path):
    ct = random_ct(direction=tuple(rotation((0, 0, 1), -15.0).ravel()))
    write_with_simpleitk(ct, tmp_path)
    ours = read_ct(tmp_path)
    assert_same_geometry(ours, ct.spacing, ct.origin, ct.direction, atol=1e-5)
    np.testing.assert_array_equal(ours.array, ct.array)
    reference = sitk_series_reader(tmp_path)
    assert_same_geometry(ours, reference.GetSpacing(), reference.GetOrigin(), reference.GetDirection())


def test_slice_order_comes_from_positions_not_file_names(tmp_path):
    ct = random_ct(shape=(9, 4, 5))
    source = tmp_path / "written"
    write_dicom_series(ct, source)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    permutation = np.random.default_rng(3).permutation(9)
    for path, new_index in zip(dicom_files(source), permutation, strict=True):
        shutil.copy(path, shuffled / f"IM{new_index:02d}")  # no .dcm suffix either: content decides
    back = read_ct(shuffled)
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.origin == pytest.approx(ct.origin)


def test_reversed_instance_numbers_and_z_still_sort_by_position(tmp_path):
    # Slices written head-first with z decreasing: sorted ascending along the normal, origin is the lowest z.
    ct = random_ct(shape=(5, 3, 4), origin=(0.0, 0.0, 50.0), direction=tuple(np.diag([1.0, 1.0, -1.0]).ravel()))
    # diag(1, 1, -1) is left-handed: DICOM keeps the normal row x column = +z, so the volume reads back flipped.
    write_dicom_series(ct, tmp_path)
    edit_slices(tmp_path, lambda i, ds: setattr(ds, "InstanceNumber", 100 - i))
    back = read_ct(tmp_path)
    np.testing.assert_array_equal(back.array, ct.array[::-1])
    assert back.origin == pytest.approx((0.0, 0.0, 50.0 - 4 * 2.5))
    np.testing.assert_allclose(back.direction, np.eye(3).ravel())
    assert back.spacing[2] == pytest.approx(2.5)


def test_small_jitter_warns_and_uses_mean_increment(tmp_path):
    ct = random_ct(shape=(5, 3, 3), origin=(0.0, 0.0, 0.0))
    write_dicom_series(ct, tmp_path)
    edit_slices(tmp_path, lambda i, ds: setattr(ds, "ImagePositionPatient", [0, 0, 2.5 * i + (0.1 if i == 2 else 0)]))
    back = read_ct(tmp_path)
    assert back.spacing[2] == pytest.approx(2.5)  # (10 - 0) / 4: the end slices did not move
    assert back.info.slice_increment_mm == pytest.approx(2.5)
    assert any("slice increment varies from 2.400 to 2.600 mm" in w for w in back.info.warnings)


def test_missing_kvp_and_thickness_are_warnings(tmp_path):
    ct = random_ct(shape=(3, 3, 3))
    write_dicom_series(ct, tmp_path, kvp=None)
    edit_slices(tmp_path, lambda i, ds: delattr(ds, "SliceThickness"))
    back = read_ct(tmp_path)
    assert back.info.kvp is None and back.info.slice_thickness_mm is None
    assert any("KVP" in w for w in back.info.warnings)
    assert any("SliceThickness missing" in w and "2.50 mm" in w for w in back.info.warnings)


def test_per_slice_rescale_is_applied(tmp_path):
    ct = random_ct(shape=(3, 3, 3))
    write_dicom_series(ct, tmp_path)

    def rescale(index, ds):  # same HU, stored with slope 2 on the middle slice
        if index == 1:
            stored = ds.pixel_array.astype(np.int32) - 1024
            ds.RescaleSlope, ds.RescaleIntercept = "2", "-1000"
            ds.PixelData = ((stored + 1000) // 2).astype("<i2").tobytes()

    edit_slices(tmp_path, rescale)
    back = read_ct(tmp_path)
    expected = ct.array.copy()
    expected[1] = (expected[1] + 1000) // 2 * 2 - 1000
    np.testing.assert_array_equal(back.array, expected)


def test_jpeg_lossless_series_is_decoded(tmp_path):
    # pydicom has no JPEG Lossless decoder installed here: GDCM inside SimpleITK decodes it.
    ct = random_ct(shape=(3, 4, 5))
    plain = tmp_path / "plain"
    write_dicom_series(ct, plain)
    compressed = tmp_path / "jpeg"
    jpeg_lossless_copy(plain, compressed)
    syntax = pydicom.dcmread(dicom_files(compressed)[0]).file_meta.TransferSyntaxUID
    assert syntax == pydicom.uid.JPEGLosslessSV1
    back = read_ct(compressed)
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.origin == pytest.approx(ct.origin)


def two_series_folder(tmp_path):
    first, second = random_ct(seed=1), random_ct(shape=(3, 8, 10), seed=2)
    uid1 = write_dicom_series(first, tmp_path, series_description="calcium 3mm", series_number=2)
    uid2 = write_dicom_series(second, tmp_path / "sub" / "dir", series_description="topogram", series_number=1)
    return (first, uid1), (second, uid2)


def test_list_series_recurses_and_summarizes(tmp_path):
    (_, uid1), (_, uid2) = two_series_folder(tmp_path)
    summaries = list_series(tmp_path)
    assert [s.series_instance_uid for s in summaries] == [uid2, uid1]  # by series number
    assert [(s.description, s.n_slices, s.modality) for s in summaries] == [("topogram", 3, "CT"), ("calcium 3mm", 6, "CT")]
    assert summaries[0].folder == tmp_path / "sub" / "dir"


def test_several_series_pick_the_calcium_series_and_uid_overrides(tmp_path):
    (first, uid1), (second, uid2) = two_series_folder(tmp_path)
    back = read_ct(tmp_path)
    assert back.info.series_instance_uid == uid1
    np.testing.assert_array_equal(back.array, first.array)
    choice = back.info.series_choice
    assert choice["selection"] == "automatic" and choice["series_instance_uid"] == uid1
    assert choice["passed_over"] == [
        {"series_instance_uid": uid2, "description": "topogram", "reason": "a localizer (scout)"}
    ]
    np.testing.assert_array_equal(read_ct(tmp_path, series_uid=uid2).array, second.array)
    assert read_ct(tmp_path, series_uid=uid2).info.series_choice["selection"] == "given"
    with pytest.raises(InputError) as raised:
        read_ct(tmp_path, series_uid="1.2.3")
    message = str(raised.value)
    assert message.startswith(f"series 1.2.3 is not in {tmp_path}; the series there are: ")
    assert f"{uid1} 'calcium 3mm' (CT, 6 slices, 2.5 mm, 120 kVp)" in message
    assert f"{uid2} 'topogram' (CT, 3 slices, 2.5 mm, 120 kVp)" in message
    assert "\n" not in message


def test_study_folder_reads_the_non_contrast_3mm_series_and_says_why(tmp_path):
    written = write_study(tmp_path)
    uid, phantom = written["calcium_3mm"]
    back = read_ct(tmp_path)
    assert back.info.series_instance_uid == uid
    np.testing.assert_array_equal(back.array, np.rint(phantom.ct.array))  # the writer stores integer HU
    assert_same_geometry(back, phantom.ct.spacing, phantom.ct.origin, phantom.ct.direction)
    choice = back.info.series_choice
    assert (choice["selection"], choice["description"], choice["n_slices"]) == ("automatic", "CaSc 3.0 Qr36", 16)
    assert (choice["slice_thickness_mm"], choice["kvp"], choice["coverage_mm"]) == (3.0, 120.0, 45.0)
    assert choice["reason"] == (
        "non-contrast axial CT (3 mm, 120 kVp, 16 slices over 45 mm, named as a calcium score), the best of 4 series"
    )
    reasons = {item["series_instance_uid"]: item["reason"] for item in choice["passed_over"]}
    assert reasons == {
        written["scout"][0]: "a localizer (scout)",
        written["recon_1mm"][0]: "slice thickness 1 mm (2.5-3 mm preferred)",  # though it has 3x the slices
        written["cta_06mm"][0]: "contrast-enhanced (ContrastBolusAgent 'Iomeprol 350')",
    }
    assert back.info.warnings == []


def test_a_study_without_a_non_contrast_axial_series_asks_for_one(tmp_path):
    written = write_study(tmp_path)
    for name in ("calcium_3mm", "recon_1mm"):
        shutil.rmtree(tmp_path / f"SE{2 if name == 'recon_1mm' else 3:04d}")
    with pytest.raises(InputError) as raised:
        read_ct(tmp_path)
    message = str(raised.value)
    assert message.startswith("none of the 2 image series is a non-contrast axial CT")
    assert f"{written['scout'][0]} 'Topogram 0.6 T20s' (CT, 1 slices, 1 mm, 120 kVp): a localizer (scout)" in message
    assert "contrast-enhanced (ContrastBolusAgent 'Iomeprol 350')" in message
    assert message.endswith("choose one by its SeriesInstanceUID (cacscoring score --series UID)")
    # Given by its UID, the CTA is read, with a warning that it is contrast-enhanced.
    cta = read_ct(tmp_path, series_uid=written["cta_06mm"][0])
    assert cta.info.series_choice["selection"] == "given"
    assert cta.info.warnings == [
        "the series is contrast-enhanced (ContrastBolusAgent 'Iomeprol 350'); "
        "calcium scores need a non-contrast axial CT"
    ]


def summary(uid, description="Heart 3.0", thickness=3.0, kvp=120.0, n_slices=40, coverage=117.0, number=None,
            **facts) -> SeriesSummary:
    return SeriesSummary(uid, description, "CT", n_slices, number, "P", Path("."), thickness, kvp,
                         coverage_mm=coverage, **facts)


NOT_NAMED = "neither its description nor its protocol names a calcium score"


@pytest.mark.parametrize(
    "series, chosen, reason",
    [
        # Nearest 2.5-3 mm when none is in the range: 2 mm is 0.5 mm off, 5 mm 2 mm off.
        ([summary("a", thickness=5.0), summary("b", thickness=2.0), summary("c", thickness=1.0)], "b",
         {"a": "slice thickness 5 mm (2.5-3 mm preferred)", "c": "slice thickness 1 mm (2.5-3 mm preferred)"}),
        ([summary("a", kvp=100.0), summary("b", kvp=None, thickness=2.5), summary("c")], "c",
         {"a": "kVp 100 (120 kVp preferred)", "b": "kVp unknown (120 kVp preferred)"}),
        ([summary("a", "Thorax 3.0"), summary("b", "Ca Score 3.0"), summary("c", "CACScoring phantom")], "b",
         {"a": NOT_NAMED, "c": NOT_NAMED}),
        # Canon: series "Cardiac 3.000", protocol "Calcium Score (Volume)", ImageType DERIVED\PRIMARY\MPR.
        ([summary("a", "Cardiac 3.000", protocol_name="Calcium Score    (Volume)",
                  image_type=("DERIVED", "PRIMARY", "MPR")), summary("b", "Cardiac 3.000", image_type=("ORIGINAL",))],
         "a", {"b": NOT_NAMED}),
        ([summary("a", coverage=90.0), summary("b", coverage=120.0, n_slices=3)], "b",
         {"a": "covers less along z (90 mm)"}),
        ([summary("a", n_slices=39), summary("b")], "b", {"a": "fewer slices (39)"}),
        # Everything equal: the lower series number, then the UID; the order given does not matter.
        ([summary("z", number=7), summary("y", number=5), summary("x", number=5)], "x",
         {"z": "the same facts; the lower series number was taken", "y": "the same facts; the lower series number was taken"}),
        # Hard exclusions, whatever their other facts.
        ([summary("a", "CCTA 0.6"), summary("b", "Angio Coronary"), summary("c", "Heart C+"),
          summary("d", "Calcium non-contrast", thickness=1.0)], "d",
         {"a": "contrast-enhanced by its description (CTA/angio/contrast)",
          "b": "contrast-enhanced by its description (CTA/angio/contrast)",
          "c": "contrast-enhanced by its description (CTA/angio/contrast)"}),
        ([summary("a", axial=False), summary("b", frames=40), summary("c", n_slices=1), summary("d", thickness=0.6),
          summary("e", "Scout"), summary("f", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))], "d",
         {"a": "not axial (a reformat, a tilted gantry or no ImageOrientationPatient)",
          "b": "multi-frame (enhanced) images, which the reader does not take", "c": "a single image",
          "e": "a localizer (scout)", "f": "a localizer (scout)"}),
    ],
    ids=["nearest-thickness", "kvp", "calcium-name", "calcium-protocol", "coverage", "slices", "tie", "contrast",
         "unsuitable"],
)
def test_choose_series_ranks_and_explains(series, chosen, reason):
    for order in (series, series[::-1]):
        choice = choose_series(order)
        assert choice.chosen.series_instance_uid == chosen
        assert {s.series_instance_uid: why for s, why in choice.passed_over} == reason


def test_threaded_read_equals_the_serial_read_bit_for_bit(tmp_path):
    written = write_study(tmp_path)
    folder = tmp_path / "SE0003"

    def rescale(index, ds):  # odd slices stored with slope 2: the per-slice float arithmetic differs
        if index % 2:
            stored = ds.pixel_array.astype(np.int32) - 1024
            ds.RescaleSlope, ds.RescaleIntercept = "2", "-1000"
            ds.PixelData = ((stored + 1000) // 2).astype("<i2").tobytes()

    edit_slices(folder, rescale)
    serial = read_ct(tmp_path, workers=1)
    assert serial.info.series_instance_uid == written["calcium_3mm"][0]
    for workers in (2, 3, 8, None):
        threaded = read_ct(tmp_path, workers=workers)
        assert threaded.array.dtype == serial.array.dtype and threaded.array.tobytes() == serial.array.tobytes()
        assert (threaded.spacing, threaded.origin, threaded.direction) == (serial.spacing, serial.origin, serial.direction)
        assert threaded.info == serial.info


def test_default_workers_is_bounded_by_the_cpus():
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_workers() == min(8, cpus)


def test_a_file_of_the_series_reads_its_whole_series(tmp_path):
    (first, uid1), _ = two_series_folder(tmp_path)
    one_file = dicom_files(tmp_path)[0]
    back = read_ct(one_file)
    assert back.info.series_instance_uid == uid1
    np.testing.assert_array_equal(back.array, first.array)


def test_other_files_beside_the_series_are_ignored(tmp_path):
    ct = random_ct(shape=(3, 3, 3))
    write_dicom_series(ct, tmp_path)
    (tmp_path / "notes.txt").write_text("acquired on the phantom\n", encoding="utf-8")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    np.testing.assert_array_equal(read_ct(tmp_path).array, ct.array)


def test_zero_pixel_spacing_is_refused_naming_the_series(tmp_path):
    write_dicom_series(random_ct(), tmp_path)
    edit_slices(tmp_path, lambda index, ds: setattr(ds, "PixelSpacing", [0.6, 0]))
    with pytest.raises(InputError, match=rf"CT {tmp_path} has voxel spacing \(0\.0, 0\.6, 2\.5\) mm"):
        read_ct(tmp_path)
