"""Training config: YAML over defaults, typed key=value overrides, unknown keys and bad values rejected."""

import pytest

from CACScoringLib.errors import InputError
from CACScoringLib.training.config import DEFAULTS, load_config, parse_overrides


def test_overrides_are_typed_by_yaml():
    assert parse_overrides(["loss.alpha=0.9", "data.patch_size=[32, 64]", "export.title=null", "train.amp=false"]) == {
        "loss": {"alpha": 0.9},
        "data": {"patch_size": [32, 64]},
        "export": {"title": None},
        "train": {"amp": False},
    }


def test_file_then_overrides_over_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: {source: phantom}\nloss: {name: tversky, alpha: 0.7}\ntrain: {epochs: 3}\n", encoding="utf-8")
    config = load_config(path, ["loss.alpha=0.9", "model.kwargs.channels=[4, 8]"])
    assert config["loss"] == {**DEFAULTS["loss"], "name": "tversky", "alpha": 0.9}
    assert config["train"]["epochs"] == 3
    assert config["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert config["model"]["kwargs"] == {"channels": [4, 8]}  # free-form: passed on to MONAI
    assert DEFAULTS["loss"]["alpha"] == 0.5  # defaults are not mutated


def test_unknown_keys_are_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: {source: phantom, patchsize: [8, 8]}\nlos: {name: dice}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"data\.patchsize, los"):
        load_config(path)
    with pytest.raises(InputError, match=r"unknown config key\(s\): train\.epoch\b"):
        load_config(None, ["data.source=phantom", "train.epoch=3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.name=tverski", "loss.name='tverski' is not one of"),
        ("split.fold=5", "split.fold=5 must lie in 0..folds-1"),
        ("data.hu_window=[300, 100]", "hu_window 300..100 is empty"),
        ("train.epochs", "is not key=value"),
    ],
)
def test_bad_values(override, message):
    with pytest.raises(InputError, match=message):
        load_config(None, ["data.source=phantom", override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=ten", "train.epochs='ten' must be a whole number >= 1"),
        ("train.epochs=-3", "train.epochs=-3 must be a whole number >= 1"),
        ("train.epochs=2.5", "train.epochs=2.5 must be a whole number >= 1"),
        ("train.epochs=true", "train.epochs=True must be a whole number >= 1"),
        ("train.batch_size=0", "train.batch_size=0 must be a whole number >= 1"),
        ("split.folds=x", "split.folds='x' must be a whole number >= 1"),
        ("data.hu_window=5", r"data.hu_window=5 must be a list of 2 numbers \[low, high\]"),
        ("data.hu_window=[-200, .nan]", r"data.hu_window=\[-200, nan\] must be a list of 2 numbers"),
        ("optim.lr=fast", "optim.lr='fast' must be a number >= 0"),
        ("optim.lr=-0.1", "optim.lr=-0.1 must be a number >= 0"),
        ("augment.flip_prob=1.5", "augment.flip_prob=1.5 must be a number from 0 to 1"),
        ("data.patch_size=[100000, 100000]", "data.patch_size=.* whole sizes from 1 to 2048"),
        ("data.phantom.train_seeds=[8, 0]", r"train_seeds=\[8, 0\] must be \[start, stop\]"),
        ("train.amp=yes please", "train.amp='yes please' must be true or false"),
        ("export.version=1.0", "export.version=1.0 must be a plain name .*quote a version"),
        ("export.model_id=../../x", "export.model_id='../../x' must be a plain name"),
        ("output_dir=", "output_dir=None must be a non-empty text"),
        ("data.phantom.shape=[48, 256]", r"data.phantom.shape=\[48, 256\] must be a list of 3 whole sizes .* or null"),
    ],
)
def test_values_are_checked_for_type_and_range_before_anything_runs(override, message):
    with pytest.raises(InputError, match=message) as caught:
        load_config(None, ["data.source=phantom", override])
    assert "\n" not in str(caught.value) and "fix the config" in str(caught.value)


def test_phantom_shape_may_be_null_when_an_acquisition_sets_the_grid():
    overrides = ["data.source=phantom", "data.phantom.shape=null", "data.phantom.options={preset: realchest}"]
    assert load_config(None, overrides)["data"]["phantom"]["shape"] is None


def test_output_dir_that_is_a_file_or_under_one_is_refused(tmp_path):
    existing = tmp_path / "results.txt"
    existing.write_text("a user's file")
    for output in (existing, existing / "run"):
        with pytest.raises(InputError, match="is an existing file; give a folder"):
            load_config(None, ["data.source=phantom", f"output_dir={output}"])
    assert existing.read_text() == "a user's file"
    assert load_config(None, ["data.source=phantom", f"output_dir={tmp_path / 'new' / 'run'}"])["output_dir"]


def test_manifest_source_needs_a_manifest():
    with pytest.raises(InputError, match="data.manifest is not set"):
        load_config(None, [])
