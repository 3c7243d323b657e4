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


def test_manifest_source_needs_a_manifest():
    with pytest.raises(InputError, match="data.manifest is not set"):
        load_config(None, [])
