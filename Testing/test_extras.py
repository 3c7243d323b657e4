"""Optional extras (pyproject [onnx], [train]): without them the commands that need them fail in one line
that names the extra, before doing any work. A missing package is simulated with sys.modules[name] = None,
which makes its import raise ImportError."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import yaml

from CACScoringLib.cli import main
from CACScoringLib.io import write_image
from CACScoringLib.models import build_network, make_config, save_package
from CACScoringLib.volume import CTVolume


@pytest.fixture
def tiny_model(tmp_path):
    config = make_config("UNet", 2, (16, 16), channels=(4, 8), strides=(2,), num_res_units=0)
    return save_package(tmp_path / "tiny", build_network(config), config, {"id": "tiny"})


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cacscoring: error: ")
    return err


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_score_with_the_onnx_backend_names_the_extra(tiny_model, tmp_path, monkeypatch, capsys, missing):
    ct = CTVolume(array=np.full((4, 32, 32), -100.0, np.float32), spacing=(0.8, 0.8, 3.0))
    image = write_image(ct, tmp_path / "ct.nii.gz")
    monkeypatch.setitem(sys.modules, missing, None)
    argv = ["score", str(image), "--model", str(tiny_model), "--backend", "onnx", "--device", "cpu", "--quiet",
            "--json", str(tmp_path / "s.json")]  # fmt: skip
    assert main(argv) == 2
    assert f'needs the optional package {missing}' in error_line(capsys)
    assert not (tmp_path / "s.json").exists()


def test_export_onnx_names_the_extra_and_writes_nothing(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export-onnx", str(tiny_model), "--output", str(tmp_path / "tiny.onnx")]) == 2
    assert 'pip install "cacscoring[onnx]"' in error_line(capsys)
    assert not (tmp_path / "tiny.onnx").exists()


def test_train_names_the_extra_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": {"source": "phantom"}, "output_dir": str(tmp_path / "run")}))
    torch.set_num_threads(1)
    assert main(["train", str(config)]) == 2
    assert 'pip install "cacscoring[train]"' in error_line(capsys)
    assert not (tmp_path / "run").exists()
