"""The Slicer module's Logic against a real MRML scene (slicer-core): geometry, segments, live scores, files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CACScoringLib.labels import ARTERIES, LABEL_ID
from CACScoringLib.scoring import score_volume
from CACScoringLib.volume import CTVolume, ScanInfo

pytestmark = pytest.mark.slicer

SPACING = (0.5, 0.5, 3.0)
# Hand-worked lesions: (artery, z slices, y range, x range, HU). Pixel area 0.25 mm², 3 mm slices (factor 1).
LESIONS = (
    ("LAD", (2, 3), (10, 13), (10, 14), 250.0),  # 12 px = 3 mm² per slice, weight 2 -> 6 per slice -> 12
    ("LAD", (4,), (25, 28), (30, 33), 450.0),  # 9 px = 2.25 mm², weight 4 -> 9
    ("RCA", (1,), (30, 34), (5, 8), 180.0),  # 12 px = 3 mm², weight 1 -> 3
)


def oblique_direction() -> tuple[float, ...]:
    angle = np.deg2rad(20.0)
    c, s = np.cos(angle), np.sin(angle)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def synthetic_case(direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)) -> tuple[CTVolume, np.ndarray]:
    hu = np.full((6, 40, 48), 40.0, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    for artery, slices, (y0, y1), (x0, x1), value in LESIONS:
        for z in slices:
            hu[z, y0:y1, x0:x1] = value
            labels[z, y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = LABEL_ID[artery]  # the label includes a soft rim
    hu[3, 30:33, 36:40] = 320.0  # unlabelled calcium: a reader will paint it as LCX
    ct = CTVolume(hu, SPACING, origin=(-12.0, 30.5, 101.0), direction=direction,
                  info=ScanInfo(kvp=120.0, slice_thickness_mm=3.0, slice_increment_mm=3.0))
    return ct, labels


def write_nifti(ct: CTVolume, path, array=None):
    sitk.WriteImage(ct.to_sitk(array), str(path))
    return path


@pytest.fixture
def loaded_case(slicer_scene, scene_logic, tmp_path):
    """Phantom CT written as NIfTI, read by Slicer's volume reader, labels put into a segmentation."""
    ct, labels = synthetic_case()
    path = write_nifti(ct, tmp_path / "ct.nii.gz")
    volume_node = slicer_scene.volumes_logic.AddArchetypeVolume(str(path), "ct", 0)
    segmentation_node = scene_logic.apply_inference_labels(volume_node, labels)
    scene_logic.start_live_scoring(volume_node, segmentation_node)
    return ct, labels, volume_node, segmentation_node


def test_volume_node_geometry_matches_itk_reader_for_oblique_ct(slicer_scene, tmp_path):
    from CACScoringSlicerLib.geometry import ct_from_volume_node, ijk_to_ras

    ct, _ = synthetic_case(oblique_direction())
    ct.array[1, 2, 3] = 999.0  # an asymmetric voxel to catch axis flips
    path = write_nifti(ct, tmp_path / "oblique.nii.gz")
    volume_node = slicer_scene.volumes_logic.AddArchetypeVolume(str(path), "oblique", 0)

    # Slicer's reader gives RAS; the point of voxel (i, j, k) must be ITK's LPS point with x, y negated
    itk_image = sitk.ReadImage(str(path))
    lps = np.array(itk_image.TransformIndexToPhysicalPoint((3, 2, 1)))
    ras = ijk_to_ras(volume_node) @ np.array([3, 2, 1, 1.0])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)

    back = ct_from_volume_node(volume_node)
    np.testing.assert_allclose(back.spacing, itk_image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(back.origin, itk_image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.direction, itk_image.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(back.array, sitk.GetArrayFromImage(itk_image))
    assert back.array[1, 2, 3] == 999.0
    # a file without acquisition facts: unknown kVp, and the answer is cached on the node
    assert back.info.kvp is None and back.info.source == "oblique"
    assert volume_node.GetAttribute("CACScoring.ScanInfo") is not None


def test_ct_volume_round_trip_through_a_volume_node(slicer_scene):
    from CACScoringSlicerLib.geometry import add_volume_node, ct_from_volume_node

    ct, _ = synthetic_case(oblique_direction())
    node = add_volume_node(slicer_scene.scene, ct, "ct")
    back = ct_from_volume_node(node)
    np.testing.assert_allclose(back.spacing, ct.spacing, atol=1e-6)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-6)
    np.testing.assert_allclose(back.direction, ct.direction, atol=1e-6)
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.info.kvp == 120.0 and back.info.slice_thickness_mm == 3.0


def test_segments_named_coloured_and_coded_from_the_label_contract(loaded_case):
    from CACScoringLib.labels import ARTERY_LABELS

    _, _, _, segmentation_node = loaded_case
    segmentation = segmentation_node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == list(ARTERIES)
    for artery in ARTERY_LABELS:
        segment = segmentation.GetSegment(artery.key)
        assert segment.GetName() == artery.key
        np.testing.assert_allclose(segment.GetColor(), np.array(artery.color) / 255.0, atol=1e-6)
        tag = segment.GetTerminology()
        assert artery.anatomic_region["CodeValue"] in tag and "18115005" in tag


def test_labels_survive_the_trip_into_segments_and_back(loaded_case, scene_logic):
    _, labels, volume_node, segmentation_node = loaded_case
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(segmentation_node, volume_node), labels)


def test_rewriting_labels_replaces_the_segments_outside_the_new_labels_box_too(loaded_case, scene_logic):
    ct, labels, volume_node, segmentation_node = loaded_case
    elsewhere = np.zeros(labels.shape, np.uint8)
    elsewhere[5, 36:39, 44:47] = LABEL_ID["LAD"]  # a box that holds none of the earlier lesions
    scene_logic.write_labels(segmentation_node, volume_node, elsewhere)
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(segmentation_node, volume_node), elsewhere)
    scene_logic.write_labels(segmentation_node, volume_node, np.zeros_like(labels))
    assert not scene_logic.labels_from_segmentation(segmentation_node, volume_node).any()


def test_initial_scores_are_the_hand_worked_values(loaded_case, scene_logic):
    result = scene_logic.result
    assert result.arteries["LAD"].agatston == pytest.approx(12.0 + 9.0)
    assert result.arteries["RCA"].agatston == pytest.approx(3.0)
    assert result.arteries["LM"].agatston == 0.0 and result.arteries["LCX"].agatston == 0.0
    assert result.total.agatston == pytest.approx(24.0)
    assert result.arteries["LAD"].lesions == 2 and result.total.lesions == 3
    assert result.arteries["LAD"].volume_mm3 == pytest.approx((24 + 9) * 0.75)


def _paint(segmentation_node, volume_node, segment_id, mask, mode):
    """What a Segment Editor stroke does: merge a modifier labelmap into one segment, limited to its extent
    (adding uses MODE_MERGE_MASK, removing MODE_MERGE_MIN with the modifier inverted)."""
    import slicer
    from CACScoringSlicerLib.geometry import oriented_image

    z = np.flatnonzero(mask.any(axis=(1, 2)))
    extent = (0, mask.shape[2] - 1, 0, mask.shape[1] - 1, int(z.min()), int(z.max()))
    modifier = oriented_image(mask.astype(np.uint8), volume_node)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        modifier, segmentation_node, segment_id, mode, extent
    )


def test_live_scores_after_editor_strokes_equal_a_full_recompute(loaded_case, scene_logic):
    import slicer

    ct, labels, volume_node, segmentation_node = loaded_case
    notified = []
    scene_logic.on_segmentation_changed = lambda: notified.append(True)

    # paint the unlabelled calcification on slice 3 into LCX
    stroke = np.zeros(labels.shape, bool)
    stroke[3, 29:34, 35:41] = True
    _paint(segmentation_node, volume_node, "LCX", stroke, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MASK)
    assert notified and scene_logic.stale
    # erase the second LAD lesion on slice 4 (modifier 0 there, 1 elsewhere)
    keep = np.ones(labels.shape, bool)
    keep[4, 20:32, 25:38] = False
    _paint(segmentation_node, volume_node, "LAD", keep, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN)

    expected = labels.copy()
    expected[stroke] = LABEL_ID["LCX"]
    expected[(~keep) & (expected == LABEL_ID["LAD"])] = 0
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(segmentation_node, volume_node), expected)

    live = scene_logic.rescore()
    # full recompute on the CT as Slicer holds it (read from the NIfTI, so without kVp/thickness facts)
    np.testing.assert_array_equal(scene_logic.ct.array, ct.array)
    full = score_volume(scene_logic.ct, expected, scene_logic.scorer.params, scene_logic.scorer.contrast)
    assert live.to_dict() == full.to_dict()
    assert not scene_logic.stale
    # by hand: LAD keeps lesion A (12); LCX gains 12 px * 0.25 mm² * weight 3 (peak 320 HU) = 9
    assert live.arteries["LAD"].agatston == pytest.approx(12.0)
    assert live.arteries["LCX"].agatston == pytest.approx(9.0)
    assert live.total.agatston == pytest.approx(24.0)


def _no_merged_export(*args):
    raise AssertionError("the merged export was used: the one-layer path was expected")


def test_strokes_read_from_the_shared_layer_equal_a_full_recompute(loaded_case, scene_logic, monkeypatch):
    import slicer

    ct, labels, volume_node, segmentation_node = loaded_case
    segmentation = segmentation_node.GetSegmentation()
    assert len({segmentation.GetLayerIndex(key) for key in ARTERIES}) == 1  # as the editor keeps them
    monkeypatch.setattr(scene_logic, "labels_from_segmentation", _no_merged_export)
    merge, erase = slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MASK, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN
    expected = labels.copy()

    far = np.zeros(labels.shape, bool)
    far[5, 36:39, 44:47] = True  # past every lesion so far: the layer's extent grows
    ct_hu = scene_logic.ct.array
    _paint(segmentation_node, volume_node, "LM", far, merge)
    expected[far] = LABEL_ID["LM"]
    assert scene_logic.rescore().to_dict() == score_volume(scene_logic.ct, expected, scene_logic.scorer.params,
                                                           scene_logic.scorer.contrast).to_dict()
    rca = labels == LABEL_ID["RCA"]
    _paint(segmentation_node, volume_node, "RCA", ~rca, erase)  # the whole RCA lesion erased: the extent shrinks
    expected[rca] = 0
    live = scene_logic.rescore()
    assert live.to_dict() == score_volume(scene_logic.ct, expected, scene_logic.scorer.params,
                                          scene_logic.scorer.contrast).to_dict()
    assert live.arteries["RCA"].agatston == 0.0 and live.arteries["LAD"].agatston == pytest.approx(21.0)
    np.testing.assert_array_equal(scene_logic.scorer.labels, expected)
    assert ct_hu[5, 36:39, 44:47].max() < 130  # the painted LM voxels are not calcium: no LM score
    assert live.arteries["LM"].agatston == 0.0
    assert scene_logic.rescore().to_dict() == live.to_dict()  # nothing changed since: nothing rescored


def test_segments_in_separate_layers_overlap_as_in_the_merged_export(loaded_case, scene_logic, monkeypatch):
    import slicer

    ct, labels, volume_node, segmentation_node = loaded_case
    segmentation = segmentation_node.GetSegmentation()
    merged_export = scene_logic.labels_from_segmentation
    segmentation.SeparateSegmentLabelmap("LAD")  # as overlapping segments are stored
    assert segmentation.GetLayerIndex("LAD") != segmentation.GetLayerIndex("RCA")
    overlap = np.zeros(labels.shape, bool)
    overlap[1, 29:35, 4:9] = True  # LAD painted over the RCA lesion: RCA, later in the contract, wins there
    overlap[3, 29:34, 35:41] = True  # and over the unlabelled calcium, which becomes LAD
    _paint(segmentation_node, volume_node, "LAD", overlap, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MASK)
    assert segmentation.GetLayerIndex("LAD") != segmentation.GetLayerIndex("RCA")
    monkeypatch.setattr(scene_logic, "labels_from_segmentation", _no_merged_export)
    live = scene_logic.rescore()
    expected = merged_export(segmentation_node, volume_node)
    assert (expected[1, 30:34, 5:8] == LABEL_ID["RCA"]).all() and (expected[3, 30:33, 36:40] == LABEL_ID["LAD"]).all()
    np.testing.assert_array_equal(scene_logic.scorer.labels, expected)
    assert live.to_dict() == score_volume(scene_logic.ct, expected, scene_logic.scorer.params,
                                          scene_logic.scorer.contrast).to_dict()
    assert live.arteries["RCA"].agatston == pytest.approx(3.0)
    assert live.arteries["LAD"].agatston == pytest.approx(21.0 + 9.0)  # + 12 px = 3 mm² at 320 HU, weight 3


def test_a_segmentation_off_the_ct_grid_is_read_through_the_merged_export(loaded_case, scene_logic):
    import vtk

    ct, labels, volume_node, segmentation_node = loaded_case
    image = segmentation_node.GetSegmentation().GetSegment("LAD").GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    matrix.SetElement(0, 3, matrix.GetElement(0, 3) + 0.25)  # half a voxel off the CT's grid
    image.SetImageToWorldMatrix(matrix)
    used = []
    original = scene_logic.labels_from_segmentation
    scene_logic.labels_from_segmentation = lambda *args: used.append(True) or original(*args)
    scene_logic.rescore()
    assert used


def test_score_and_lesion_tables_follow_the_result(loaded_case, scene_logic):
    parameter_node = scene_logic.parameter_node()
    scores = parameter_node.GetNodeReference("scoreTable")
    lesions = parameter_node.GetNodeReference("lesionTable")
    assert scores.GetNumberOfRows() == len(ARTERIES) + 1
    assert scores.GetCellText(1, 0) == "LAD" and scores.GetCellText(1, 2) == "21.0"
    assert scores.GetCellText(4, 0) == "Total" and scores.GetCellText(4, 1) == "3"
    assert lesions.GetNumberOfRows() == 3
    assert sorted(lesions.GetCellText(row, 1) for row in range(3)) == ["LAD", "LAD", "RCA"]


def test_lesion_center_is_the_ras_point_of_its_centroid(loaded_case, scene_logic):
    from CACScoringSlicerLib.geometry import ijk_to_ras

    _, _, volume_node, _ = loaded_case
    rca = next(lesion for lesion in scene_logic.result.lesions if lesion.artery == "RCA")
    center = scene_logic.lesion_center_ras(rca.id)
    # the RCA lesion occupies y 30..33, x 5..7 on slice 1: centroid (i, j, k) = (6, 31.5, 1)
    expected = ijk_to_ras(volume_node) @ np.array([6.0, 31.5, 1.0, 1.0])
    np.testing.assert_allclose(center, expected[:3], atol=1e-6)


def test_reassign_and_delete_lesion_move_exactly_its_score_and_undo_restores(loaded_case, scene_logic):
    _, labels, volume_node, segmentation_node = loaded_case
    scene = scene_logic.scene
    scene.SetUndoOn()
    lesion_b = next(lesion for lesion in scene_logic.result.lesions if lesion.agatston == pytest.approx(9.0))

    moved = scene_logic.reassign_lesion(lesion_b.id, "RCA")
    assert moved.arteries["LAD"].agatston == pytest.approx(12.0)
    assert moved.arteries["RCA"].agatston == pytest.approx(12.0)
    assert moved.total.agatston == pytest.approx(24.0)

    scene.Undo()
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(segmentation_node, volume_node), labels)
    assert scene_logic.rescore().arteries["LAD"].agatston == pytest.approx(21.0)

    rca = next(lesion for lesion in scene_logic.result.lesions if lesion.artery == "RCA")
    deleted = scene_logic.reassign_lesion(rca.id, None)
    assert deleted.arteries["RCA"].agatston == 0.0 and deleted.total.agatston == pytest.approx(21.0)
    remaining = scene_logic.labels_from_segmentation(segmentation_node, volume_node)
    assert not (remaining == LABEL_ID["RCA"]).any()
    np.testing.assert_array_equal(remaining[labels != LABEL_ID["RCA"]], labels[labels != LABEL_ID["RCA"]])


def test_saved_and_reloaded_segmentation_scores_identically(loaded_case, scene_logic, tmp_path):
    ct, _, volume_node, segmentation_node = loaded_case
    before = scene_logic.result.to_dict()
    path = scene_logic.save_segmentation(segmentation_node, tmp_path / "case.seg.nrrd")
    reloaded = scene_logic.load_segmentation(path)
    assert reloaded.GetSegmentation().GetSegment("LAD").GetName() == "LAD"
    after = scene_logic.start_live_scoring(volume_node, reloaded).to_dict()
    assert after == before


def test_reader_edits_survive_a_second_inference_run(loaded_case, scene_logic):
    import slicer

    _, labels, volume_node, segmentation_node = loaded_case
    assert not scene_logic.is_edited(segmentation_node, volume_node)
    erase = np.ones(labels.shape, bool)
    erase[1] = False
    _paint(segmentation_node, volume_node, "RCA", erase, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MIN)
    edited_labels = scene_logic.labels_from_segmentation(segmentation_node, volume_node)
    assert scene_logic.is_edited(segmentation_node, volume_node)

    second = scene_logic.apply_inference_labels(volume_node, labels, segmentation_node)
    assert second is not segmentation_node
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(segmentation_node, volume_node), edited_labels)
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(second, volume_node), labels)

    # an unedited node is reused; an explicit overwrite replaces the edited one
    assert scene_logic.apply_inference_labels(volume_node, labels, second) is second
    assert scene_logic.apply_inference_labels(volume_node, labels, segmentation_node, overwrite_edited=True) \
        is segmentation_node
    np.testing.assert_array_equal(scene_logic.labels_from_segmentation(segmentation_node, volume_node), labels)


def test_export_writes_report_files_with_the_scores(loaded_case, scene_logic, tmp_path):
    paths = scene_logic.export(tmp_path / "out", "case1")
    with open(paths["csv"], newline="", encoding="utf-8") as f:
        rows = {row["artery"]: row for row in csv.DictReader(f)}
    assert float(rows["LAD"]["agatston"]) == pytest.approx(21.0)
    assert float(rows["total"]["agatston"]) == pytest.approx(24.0)
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["total"]["agatston"] == pytest.approx(24.0)
    assert set(k for k in paths if k.startswith("image_")) == {"image_LAD", "image_RCA"}
    assert paths["image_LAD"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text(encoding="utf-8")
    assert "case1_LAD.png" in page and "case1_LM.png" not in page
    assert paths["segmentation"].name == "case1.seg.nrrd" and paths["segmentation"].stat().st_size > 0


def test_scene_saved_with_the_session_restores_scores(loaded_case, scene_logic, slicer_scene, tmp_path):
    from CACScoringSlicerLib.logic import CACScoringSceneLogic
    from CACScoringSlicerLib.standalone import create_standalone_scene

    before = scene_logic.result.to_dict()
    scene = slicer_scene.scene
    scene.SetRootDirectory(str(tmp_path))
    scene.SetURL(str(tmp_path / "session.mrml"))
    for node, file_name in ((loaded_case[2], "ct.nrrd"), (loaded_case[3], "calcium.seg.nrrd")):
        node.AddDefaultStorageNode()
        node.GetStorageNode().SetFileName(str(tmp_path / file_name))
        assert node.GetStorageNode().WriteData(node)
    assert scene.Commit()

    fresh = create_standalone_scene()
    fresh.scene.SetURL(str(tmp_path / "session.mrml"))
    assert fresh.scene.Import()
    restored = CACScoringSceneLogic(fresh.scene).restore()
    assert restored is not None and restored.to_dict() == before


def test_terminology_files_agree_with_the_label_contract_and_load_in_slicer(slicer_scene):
    from CACScoringSlicerLib import terminology

    from CACScoringLib.labels import ARTERY_LABELS

    resources = terminology.__file__.rsplit("/", 2)[0] + "/Resources"
    checked_in = json.loads(open(f"{resources}/{terminology.TERMINOLOGY_FILE}", encoding="utf-8").read())
    anatomic = json.loads(open(f"{resources}/{terminology.ANATOMIC_FILE}", encoding="utf-8").read())
    assert checked_in == terminology.category_type_context()
    assert anatomic == terminology.anatomic_context()
    regions = anatomic["AnatomicCodes"]["AnatomicRegion"]
    assert [(r["CodeValue"], r["recommendedDisplayRGBValue"]) for r in regions] == [
        (a.anatomic_region["CodeValue"], list(a.color)) for a in ARTERY_LABELS
    ]

    import slicer
    import vtk

    logic = slicer.vtkSlicerTerminologiesModuleLogic()  # no scene: the default lists are not needed here
    terminology.load_terminology_files(logic, Path(resources))
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    assert terminology.TERMINOLOGY_CONTEXT in [names.GetValue(i) for i in range(names.GetNumberOfValues())]
    assert logic.GetNumberOfRegionsInRegionContext(terminology.ANATOMIC_CONTEXT) == len(ARTERY_LABELS)
    with pytest.raises(RuntimeError, match="did not load the CACScoring terminology"):
        terminology.load_terminology_files(logic, Path(resources) / "nowhere")


def test_segment_editor_preset_masks_painting_to_calcium(scene_logic):
    import slicer

    editor_node = scene_logic.segment_editor_node()
    assert scene_logic.segment_editor_node() is editor_node  # one per scene
    scene_logic.apply_calcium_mask_preset(editor_node)
    assert editor_node.GetSourceVolumeIntensityMask()
    assert tuple(editor_node.GetSourceVolumeIntensityMaskRange()) == (130.0, 10000.0)
    assert editor_node.GetOverwriteMode() == slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments


REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "realct" / "qrm_canon_large_rep1.tar.xz"


class DicomDatabase:
    """Slicer's DICOM database as the module queries it: fileForInstance, fileValue("gggg,eeee")."""

    def __init__(self, folder):
        import pydicom

        self.headers = {str(f): pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir()) if f.is_file()}
        self.files = {str(ds.SOPInstanceUID): f for f, ds in self.headers.items()}

    def fileForInstance(self, uid):
        return self.files.get(uid, "")

    def fileValue(self, file, tag):
        group, element = (int(part, 16) for part in tag.split(","))
        item = self.headers[file].get((group, element))
        return "" if item is None or item.value is None else str(item.value)


@pytest.mark.skipif(not REAL_CT.is_file(), reason="the real QRM phantom CT is not available")
def test_dicom_facts_come_from_slicers_database_not_from_rereading_the_series(slicer_scene, tmp_path, monkeypatch):
    import tarfile

    import slicer
    from CACScoringSlicerLib.geometry import SCAN_INFO_ATTRIBUTE, add_volume_node, scan_info

    import CACScoringLib.io
    import CACScoringLib.io.dicom

    with tarfile.open(REAL_CT) as archive:
        archive.extractall(tmp_path, filter="data")
    folder = tmp_path / "qrm_canon_large_rep1"
    expected = CACScoringLib.io.read_ct(folder)
    node = add_volume_node(slicer_scene.scene, expected, "QRM")  # as Slicer's DICOM plugin loads it:
    node.RemoveAttribute(SCAN_INFO_ATTRIBUTE)  # no CACScoring facts, the instance UIDs of the series
    database = DicomDatabase(folder)
    node.SetAttribute("DICOM.instanceUIDs", " ".join(database.files))
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)

    def no_reading(*args, **kwargs):
        raise AssertionError("the series was read again")

    monkeypatch.setattr(CACScoringLib.io, "read_ct", no_reading)
    monkeypatch.setattr(CACScoringLib.io.dicom, "read_dicom_series", no_reading)
    info = scan_info(node)
    assert (info.slice_thickness_mm, info.kvp, info.manufacturer) == (3.0, 120.0, "TOSHIBA")
    for name in ("slice_thickness_mm", "kvp", "manufacturer", "modality", "series_instance_uid", "patient_id",
                 "warnings"):
        assert getattr(info, name) == getattr(expected.info, name), name
    assert info.slice_increment_mm == pytest.approx(expected.info.slice_increment_mm, abs=1e-4)


def test_contrast_enhanced_ct_is_named_and_its_category_not_valid_in_the_panel(slicer_scene, scene_logic, tmp_path):
    from CACScoringLib.anatomy import find_heart
    from CACScoringLib.phantom import make_thorax_phantom
    from CACScoringLib.scoring import NOT_VALID_ON_CONTRAST

    phantom = make_thorax_phantom(seed=3, noise_hu=10.0)
    heart, _ = find_heart(phantom.ct)
    enhanced = phantom.ct.array.copy()
    enhanced[heart.on_ct_grid() & (np.abs(enhanced - 40.0) < 30.0) & (phantom.labels == 0)] += 260.0
    path = write_nifti(phantom.ct, tmp_path / "cta.nii.gz", enhanced)
    volume_node = slicer_scene.volumes_logic.AddArchetypeVolume(str(path), "cta", 0)
    segmentation_node = scene_logic.apply_inference_labels(volume_node, phantom.labels)
    result = scene_logic.start_live_scoring(volume_node, segmentation_node)
    assert result.contrast.enhanced and result.contrast.blood_pool_hu > 260.0
    assert NOT_VALID_ON_CONTRAST in scene_logic.summary()
    assert any(f"{result.contrast.blood_pool_hu:.0f} HU" in warning for warning in scene_logic.warnings())
    assert result.total.agatston == pytest.approx(phantom.scores.total.agatston)  # still scored, for the record
