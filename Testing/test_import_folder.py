"""import-folder on NIfTI pairs written into tmp_path: nnU-Net raw and images/ + labels/ layouts."""

import argparse
import json

import numpy as np
import pytest
import SimpleITK as sitk

from CACScoringLib.cli import import_folder as import_folder_cli
from CACScoringLib.data.folder import import_folder
from CACScoringLib.data.manifest import load_manifest
from CACScoringLib.errors import InputError
from CACScoringLib.io import read_ct, read_labels
from CACScoringLib.labels import LABEL_ID

SPACING = (0.5, 0.5, 3.0)


def write_nifti(array, path, spacing=SPACING, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_pair(value=LABEL_ID["LAD"], hu=250.0):
    """A 4x4 pixel lesion on slice 1 of a 3-slice volume, labelled `value`."""
    image = np.zeros((3, 16, 16), np.float32)
    labels = np.zeros((3, 16, 16), np.uint8)
    image[1, 4:8, 4:8] = hu
    labels[1, 4:8, 4:8] = value
    return image, labels


def test_nnunet_layout_with_our_ids(tmp_path):
    data = tmp_path / "Dataset001"
    for case in ("c1", "c2"):
        image, labels = make_pair()
        write_nifti(image, data / "imagesTr" / f"{case}_0000.nii.gz")
        write_nifti(labels, data / "labelsTr" / f"{case}.nii.gz")
    labels_v2 = {"background": 0, "LM": 1, "LAD": 2, "LCX": 3, "RCA": 4}
    (data / "dataset.json").write_text(json.dumps({"labels": labels_v2, "file_ending": ".nii.gz"}))
    (data / "imagesTs").mkdir()
    out = tmp_path / "out"
    report = import_folder(data, out, progress=False)
    assert report["summary"] == {"cases": 2, "imported": 2, "skipped": 0}
    assert any("imagesTs ignored" in note for note in report["notes"])

    manifest = load_manifest(out)
    assert manifest.source == "folder:nnunet" and [c.id for c in manifest.cases] == ["c1", "c2"]
    case = manifest.cases[0]
    assert case.shape == (3, 16, 16) and case.spacing == SPACING
    ct = read_ct(case.image)
    np.testing.assert_array_equal(read_labels(case.labels, ct), make_pair()[1])
    # 16 pixels x 0.25 mm2 = 4 mm2, 250 HU -> weight 2; 3 mm slices need no normalisation
    assert case.reference_scores["LAD"]["agatston"] == pytest.approx(8.0)
    assert case.reference_scores["LAD"]["volume_mm3"] == pytest.approx(16 * 0.25 * 3.0)
    assert case.reference_scores["total"]["agatston"] == pytest.approx(8.0)


def test_dataset_json_names_remap_label_values(tmp_path):
    data = tmp_path / "Dataset002"
    image, labels = make_pair(value=1)  # value 1 means RCA in this dataset
    write_nifti(image, data / "imagesTr" / "c1_0000.nii.gz")
    write_nifti(labels, data / "labelsTr" / "c1.nii.gz")
    (data / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "Right Coronary Artery"}})
    )
    out = tmp_path / "out"
    report = import_folder(data, out, progress=False)
    assert report["summary"]["imported"] == 1
    case = load_manifest(out).cases[0]
    labels_read = read_labels(case.labels, read_ct(case.image))
    assert set(np.unique(labels_read)) == {0, LABEL_ID["RCA"]}
    assert int((labels_read == LABEL_ID["RCA"]).sum()) == 16
    assert not list((out / "labels").glob(".*"))  # no scratch file left


def test_values_that_dataset_json_does_not_list_are_skipped(tmp_path):
    data = tmp_path / "Dataset004"
    image, labels = make_pair(value=2)
    write_nifti(image, data / "imagesTr" / "c1_0000.nii.gz")
    write_nifti(labels, data / "labelsTr" / "c1.nii.gz")
    (data / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "RCA": 1}}))
    report = import_folder(data, tmp_path / "out", progress=False)
    assert report["summary"]["imported"] == 0
    assert "value(s) [2] that dataset.json does not list" in report["cases"][0]["reason"]


def test_dataset_json_with_foreign_labels_is_refused(tmp_path):
    data = tmp_path / "Dataset003"
    image, labels = make_pair(value=1)
    write_nifti(image, data / "imagesTr" / "c1_0000.nii.gz")
    write_nifti(labels, data / "labelsTr" / "c1.nii.gz")
    (data / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "calcium": 1}}))
    with pytest.raises(InputError, match="'calcium'"):
        import_folder(data, tmp_path / "out", progress=False)


def test_images_labels_layout_skips_bad_pairs_with_reasons(tmp_path):
    data = tmp_path / "data"
    image, labels = make_pair()
    write_nifti(image, data / "images" / "good.nii.gz")
    write_nifti(labels, data / "labels" / "good.nii.gz")
    write_nifti(image, data / "images" / "grid.nii.gz")
    write_nifti(labels, data / "labels" / "grid.nii.gz", spacing=(0.7, 0.7, 3.0))
    write_nifti(image, data / "images" / "values.nii.gz")
    write_nifti(np.where(labels > 0, 7, 0).astype(np.uint8), data / "labels" / "values.nii.gz")
    write_nifti(image, data / "images" / "alone.nii.gz")
    (data / "images" / "notes.txt").write_text("not an image", encoding="utf-8")
    out = tmp_path / "out"
    report = import_folder(data, out, progress=False)
    by_id = {entry["id"]: entry for entry in report["cases"]}
    assert set(by_id) == {"good", "grid", "values", "alone"}
    assert by_id["good"]["status"] == "imported" and by_id["good"]["labelled_voxels"] == 16
    assert "does not match the CT grid" in by_id["grid"]["reason"]
    assert "outside 0..4" in by_id["values"]["reason"]
    assert "no label map" in by_id["alone"]["reason"]
    assert [c.id for c in load_manifest(out).cases] == ["good"]


def test_unknown_layout_and_output_in_place_are_refused(tmp_path):
    with pytest.raises(InputError, match="imagesTr"):
        import_folder(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(InputError, match="input folder"):
        import_folder(tmp_path, tmp_path, progress=False)


def test_cli(tmp_path, capsys):
    data = tmp_path / "data"
    image, labels = make_pair()
    write_nifti(image, data / "images" / "c1_0000.nii.gz")
    write_nifti(labels, data / "labels" / "c1.nii.gz")
    parser = argparse.ArgumentParser()
    import_folder_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["import-folder", str(data), str(tmp_path / "out"), "--no-progress"])
    assert args.func(args) == 0
    assert "imported 1" in capsys.readouterr().out
    assert load_manifest(tmp_path / "out").cases[0].id == "c1"
