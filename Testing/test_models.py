"""Model configs, networks, packages (save/load, checksums, safe loading), registry and downloads."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from CACScoringLib.errors import InputError
from CACScoringLib.labels import ARTERY_BY_ID
from CACScoringLib.models import (
    Registry,
    build_network,
    dynunet_kernels_strides,
    list_models,
    load_package,
    make_config,
    resolve_device,
    save_package,
    validate_config,
)
from CACScoringLib.models.networks import size_divisor
from CACScoringLib.models.package import sha256_file

torch.set_num_threads(1)


def tiny_config(dims=2):
    patch = (16, 16) if dims == 2 else (8, 16, 16)
    return make_config("UNet", dims, patch, channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture
def package_folder(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    network = build_network(config)
    folder = save_package(tmp_path / "tiny", network, config, {"id": "tiny", "version": "1.2.3", "training_data": "none"})
    return folder, network


def rewrite_checksums(folder: Path, names):
    listing = {name: sha256_file(folder / name) for name in names}
    (folder / "checksums.json").write_text(json.dumps({"sha256": listing}))


def test_dynunet_heuristic_matches_hand_worked_case():
    # 3 mm slices, 0.8 mm pixels: z is > 2x coarser, so the first level pools in-plane only (kernel 1 in z);
    # then all axes pool until z reaches 4 voxels, in-plane goes on while >= 4 voxels remain.
    kernels, strides = dynunet_kernels_strides([32, 128, 128], [3.0, 0.8, 0.8])
    assert strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    assert kernels == [[3, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    # Isotropic 2D 64x64: halve while >= 4 remain: 64 -> 32 -> 16 -> 8 -> 4.
    _, strides_2d = dynunet_kernels_strides([64, 64], [1.0, 1.0])
    assert strides_2d == [[1, 1]] + [[2, 2]] * 4


@pytest.mark.parametrize(
    ("name", "dims", "patch", "kwargs"),
    [
        ("UNet", 2, (32, 32), {"channels": (4, 8), "strides": (2,)}),
        ("DynUNet", 3, (8, 32, 32), {"filters": [4, 8, 8, 8, 8]}),
        ("FlexibleUNet", 2, (32, 32), {}),
    ],
)
def test_build_network_gives_five_class_logits(name, dims, patch, kwargs):
    config = make_config(name, dims, patch, slice_spacing_mm=2.0, **kwargs)
    network = build_network(config).eval()
    divisor = size_divisor(config)
    assert all(p % d == 0 for p, d in zip(patch, divisor, strict=True))
    with torch.no_grad():
        out = network(torch.rand(2, 1, *patch))
    assert out.shape == (2, 1 + len(ARTERY_BY_ID), *patch)


def test_context_model_takes_its_slices_as_input_channels():
    config = make_config("UNet", 2, (32, 32), context_slices=3, channels=(4, 8), strides=(2,))
    assert config["in_channels"] == 3
    with torch.no_grad():
        assert build_network(config).eval()(torch.rand(2, 3, 32, 32)).shape == (2, 5, 32, 32)
    for channels, dims in ((2, 2), (3, 3), (0, 2)):
        bad = make_config("UNet", dims, (32,) * dims)
        bad["in_channels"] = channels
        with pytest.raises(InputError, match="in_channels"):
            validate_config(bad)


def test_flexible_unet_never_downloads_pretrained_weights():
    config = make_config("FlexibleUNet", 2, (32, 32), pretrained=True)
    with pytest.raises(InputError, match="download"):
        build_network(config)


def test_config_with_wrong_label_set_is_refused():
    config = tiny_config()
    config["labels"] = {"0": "background", "1": "LAD", "2": "LM", "3": "LCX", "4": "RCA"}
    with pytest.raises(InputError, match="label contract"):
        validate_config(config)
    config["labels"] = {"0": "background", "1": "calcium"}
    with pytest.raises(InputError, match="label contract"):
        validate_config(config)


def test_package_round_trip(package_folder):
    folder, network = package_folder
    assert {p.name for p in folder.iterdir()} == {"config.json", "metadata.json", "model.safetensors", "checksums.json"}
    package = load_package(folder, "cpu")
    assert (package.id, package.version, package.spatial_dims) == ("tiny", "1.2.3", 2)
    assert not package.network.training
    assert package.metadata["training_data"] == "none"
    assert package.metadata["torch_version"] == torch.__version__
    x = torch.rand(1, 1, 16, 16)
    network.eval()
    with torch.no_grad():
        assert torch.equal(package.network(x), network(x))


def test_save_refuses_network_that_config_cannot_rebuild(tmp_path):
    config = tiny_config()
    other = build_network(make_config("UNet", 2, (16, 16), channels=(8, 16), strides=(2,)))
    with pytest.raises(InputError, match="does not match"):
        save_package(tmp_path / "bad", other, config)


def test_checksum_mismatch_names_the_file(package_folder):
    folder, _ = package_folder
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="model.safetensors"):
        load_package(folder)


def test_missing_checksums_file_is_refused(package_folder):
    folder, _ = package_folder
    (folder / "checksums.json").unlink()
    with pytest.raises(InputError, match="checksums.json"):
        load_package(folder)


class Payload:
    """Stands for an arbitrary pickled object (code that unpickling would run)."""


def test_pickled_object_is_refused(package_folder):
    folder, _ = package_folder
    (folder / "model.safetensors").unlink()
    torch.save({"weights": Payload()}, folder / "model.pt")
    rewrite_checksums(folder, ["config.json", "metadata.json", "model.pt"])
    with pytest.raises(InputError, match="refused to unpickle"):
        load_package(folder)


def test_plain_state_dict_loads_with_weights_only(package_folder):
    folder, network = package_folder
    (folder / "model.safetensors").unlink()
    torch.save(network.state_dict(), folder / "model.pt")
    rewrite_checksums(folder, ["config.json", "metadata.json", "model.pt"])
    package = load_package(folder)
    for key, value in network.state_dict().items():
        assert torch.equal(package.network.state_dict()[key], value)


def test_weights_of_another_architecture_are_refused(package_folder, tmp_path):
    folder, _ = package_folder
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["network"]["kwargs"]["channels"] = [8, 16]
    (folder / "config.json").write_text(json.dumps(config))
    rewrite_checksums(folder, ["config.json", "metadata.json", "model.safetensors"])
    with pytest.raises(InputError, match="do not fit"):
        load_package(folder)


def test_wrong_label_set_in_package_is_refused(package_folder):
    folder, _ = package_folder
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["labels"]["4"] = "PDA"
    (folder / "config.json").write_text(json.dumps(config))
    rewrite_checksums(folder, ["config.json", "metadata.json", "model.safetensors"])
    with pytest.raises(InputError, match="label contract"):
        load_package(folder)


def write_registry(path: Path, models, default=None) -> Registry:
    path.write_text(json.dumps({"default": default, "models": models}))
    return Registry.load(path)


def entry(model_id, weights_sha, **where):
    return {"id": model_id, "title": "Tiny", "dims": 2, "sha256": weights_sha, "version": "1.2.3", **where}


def test_registry_resolves_shipped_package_and_checks_weights_hash(package_folder, tmp_path):
    folder, _ = package_folder
    sha = sha256_file(folder / "model.safetensors")
    registry = write_registry(tmp_path / "models.json", [entry("tiny", sha, path="tiny")], default="tiny")
    assert registry.default_id() == "tiny"
    assert load_package("tiny", registry=registry).id == "tiny"
    rows = list_models(registry)
    assert rows == [
        {"id": "tiny", "title": "Tiny", "dims": 2, "version": "1.2.3", "installed": True, "source": "shipped", "default": True}
    ]
    wrong = write_registry(tmp_path / "models.json", [entry("tiny", "0" * 64, path="tiny")])
    with pytest.raises(InputError, match="registry checksum"):
        load_package("tiny", registry=wrong)


def test_unknown_id_and_null_default(tmp_path):
    registry = write_registry(tmp_path / "models.json", [])
    with pytest.raises(InputError, match="unknown model 'nope'"):
        load_package("nope", registry=registry)
    with pytest.raises(InputError, match="no trained default"):
        registry.default_id()


def test_shipped_registry_default_is_a_trained_installed_model():
    registry = Registry.load()
    package = load_package(registry.default_id())
    assert package.metadata.get("accuracy"), "the default model must record its measured accuracy"


def zip_package(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            zf.write(path, Path("tiny") / path.relative_to(folder))
    return archive


def test_download_from_file_url_into_cache(package_folder, tmp_path, monkeypatch):
    folder, network = package_folder
    monkeypatch.setenv("CACSCORING_CACHE", str(tmp_path / "cache"))
    url = zip_package(folder, tmp_path / "tiny.zip").as_uri()
    sha = sha256_file(folder / "model.safetensors")
    registry = write_registry(tmp_path / "models.json", [entry("remote", sha, url=url)])
    assert list_models(registry)[0]["installed"] is False
    package = load_package("remote", registry=registry)
    assert package.folder == tmp_path / "cache" / "remote" / "1.2.3"
    assert list_models(registry)[0]["installed"] is True
    assert torch.equal(package.network.state_dict()["model.0.conv.weight"], network.state_dict()["model.0.conv.weight"])


def test_download_with_wrong_checksum_installs_nothing(package_folder, tmp_path, monkeypatch):
    folder, _ = package_folder
    monkeypatch.setenv("CACSCORING_CACHE", str(tmp_path / "cache"))
    url = zip_package(folder, tmp_path / "tiny.zip").as_uri()
    registry = write_registry(tmp_path / "models.json", [entry("remote", "f" * 64, url=url)])
    with pytest.raises(InputError, match="checksum"):
        load_package("remote", registry=registry)
    assert not (tmp_path / "cache" / "remote" / "1.2.3").exists()


def test_download_of_non_zip_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CACSCORING_CACHE", str(tmp_path / "cache"))
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    registry = write_registry(tmp_path / "models.json", [entry("remote", "f" * 64, url=junk.as_uri())])
    with pytest.raises(InputError, match="not a zip"):
        load_package("remote", registry=registry)


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")


def run_cli(module, argv):
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_export_onnx_command_matches_pytorch(package_folder, tmp_path):
    import onnxruntime

    from CACScoringLib.cli import export_onnx

    folder, network = package_folder
    output = tmp_path / "tiny.onnx"
    assert run_cli(export_onnx, ["export-onnx", str(folder), "--output", str(output)]) == 0
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, 32, 48)  # other batch and spatial sizes than the export example: dynamic axes
    network.eval()
    with torch.no_grad():
        expected = network(x).numpy()
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4


def test_models_command_lists_json(capsys):
    from CACScoringLib.cli import models

    assert run_cli(models, ["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    registry = Registry.load()
    assert listing["default"] == registry.default
    assert [row["id"] for row in listing["models"]] == registry.ids


def test_models_table_never_cuts_an_id_at_80_columns():
    from rich.console import Console

    from CACScoringLib.cli.models import models_table

    rows = list_models(Registry.load())
    rows.append({"id": "cac-dynunet3d-coca-finetuned-long", "title": "a long title " * 6, "dims": 3,
                 "version": "10.20.30-rc1", "installed": False,
                 "source": "https://example.org/models/cac-dynunet3d-coca-finetuned-long-10.20.30-rc1.zip",
                 "default": False})
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(models_table(rows))
    text = console.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    cells = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    for row in rows:  # each id and version sits whole in one line of its cell
        assert any(cell[2].strip() == row["id"] and cell[5].strip() == row["version"] for cell in cells), row["id"]
    assert "…" not in text
