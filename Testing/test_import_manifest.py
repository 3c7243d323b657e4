"""Training manifest round trip and validation."""

import json

import pytest

from CACScoringLib.data.manifest import ManifestCase, load_manifest, write_manifest
from CACScoringLib.errors import InputError


def make_case(tmp_path, case_id, labels=True):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "labels").mkdir(exist_ok=True)
    image = tmp_path / "images" / f"{case_id}.nii.gz"
    image.write_bytes(b"x")
    label_path = None
    if labels:
        label_path = tmp_path / "labels" / f"{case_id}.nii.gz"
        label_path.write_bytes(b"x")
    return ManifestCase(
        id=case_id,
        image=image,
        labels=label_path,
        spacing=(0.5, 0.6, 3.0),
        shape=(10, 20, 30),
        reference_scores={
            "LAD": {"agatston": 12.5, "volume_mm3": 10.0},
            "total": {"agatston": 12.5, "volume_mm3": 10.0},
        },
        patient_id="patient-" + case_id,
    )


def test_round_trip_keeps_relative_paths_and_values(tmp_path):
    cases = [make_case(tmp_path, "a"), make_case(tmp_path, "b", labels=False)]
    path = write_manifest(tmp_path, "unit-test", cases)
    assert path == tmp_path / "manifest.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["version"] == 1 and document["source"] == "unit-test"
    assert document["cases"][0]["image"] == "images/a.nii.gz"
    assert document["cases"][0]["labels"] == "labels/a.nii.gz"
    assert document["cases"][1]["labels"] is None
    assert document["cases"][0]["spacing"] == [0.5, 0.6, 3.0] and document["cases"][0]["shape"] == [
        10,
        20,
        30,
    ]

    manifest = load_manifest(path)
    assert manifest.source == "unit-test" and manifest.root == tmp_path.resolve()
    assert [c.id for c in manifest.cases] == ["a", "b"]
    first = manifest.cases[0]
    assert first.image == (tmp_path / "images" / "a.nii.gz").resolve()
    assert first.patient_id == "patient-a"
    assert first.reference_scores["LAD"]["agatston"] == 12.5
    assert manifest.cases[1].labels is None


def test_manifest_survives_moving_the_folder(tmp_path):
    source = tmp_path / "one"
    source.mkdir()
    write_manifest(source / "manifest.json", "s", [make_case(source, "a")])
    moved = source.rename(tmp_path / "two")
    assert load_manifest(moved).cases[0].image == (moved / "images" / "a.nii.gz").resolve()


def test_missing_file_and_bad_version_are_input_errors(tmp_path):
    case = make_case(tmp_path, "a")
    path = write_manifest(tmp_path, "s", [case])
    case.labels.unlink()
    with pytest.raises(InputError, match="does not exist"):
        load_manifest(path)
    assert load_manifest(path, check_files=False).cases[0].id == "a"
    path.write_text(json.dumps({"version": 2, "cases": []}))
    with pytest.raises(InputError, match="version 1"):
        load_manifest(path)
    with pytest.raises(InputError, match="no manifest"):
        load_manifest(tmp_path / "nowhere")


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(InputError, match="unique"):
        write_manifest(tmp_path, "s", [make_case(tmp_path, "a"), make_case(tmp_path, "a")])


@pytest.mark.parametrize(("key", "value"), [("spacing", "abc"), ("spacing", [0.5, 0.6, 0]), ("shape", [10, "x", 30])])
def test_bad_geometry_in_a_manifest_is_a_one_line_error(tmp_path, key, value):
    path = write_manifest(tmp_path, "s", [make_case(tmp_path, "a")])
    document = json.loads(path.read_text(encoding="utf-8"))
    document["cases"][0][key] = value
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(InputError, match=rf"case a .*{key}"):
        load_manifest(path)
