"""Model configs, networks, packages (save/load, checksums, safe loading), registry and downloads."""

from __future__ import annotations

import argparse
import io
import json
import shutil
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
from CACScoringLib.models import registry as registry_module
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


def entry(model_id, package_sha, **where):
    return {"id": model_id, "title": "Tiny", "dims": 2, "sha256": package_sha, "version": "1.2.3", **where}


def test_registry_resolves_shipped_package_and_checks_the_package_hash(package_folder, tmp_path):
    folder, _ = package_folder
    sha = sha256_file(folder / "checksums.json")
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


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def serve(monkeypatch, files: dict[str, Path]):
    """Answer registry downloads of these https URLs from local files (no network in tests)."""
    monkeypatch.setattr(registry_module, "_open_url", lambda url: FakeResponse(files[url].read_bytes()))


def test_download_from_https_url_into_cache(package_folder, tmp_path, monkeypatch):
    folder, network = package_folder
    monkeypatch.setenv("CACSCORING_CACHE", str(tmp_path / "cache"))
    url = "https://models.example/tiny.zip"
    serve(monkeypatch, {url: zip_package(folder, tmp_path / "tiny.zip")})
    sha = sha256_file(folder / "checksums.json")
    registry = write_registry(tmp_path / "models.json", [entry("remote", sha, url=url)])
    assert list_models(registry)[0]["installed"] is False
    package = load_package("remote", registry=registry)
    assert package.folder == tmp_path / "cache" / "remote" / "1.2.3"
    assert list_models(registry)[0]["installed"] is True
    assert torch.equal(package.network.state_dict()["model.0.conv.weight"], network.state_dict()["model.0.conv.weight"])


def test_download_with_wrong_checksum_installs_nothing(package_folder, tmp_path, monkeypatch):
    folder, _ = package_folder
    monkeypatch.setenv("CACSCORING_CACHE", str(tmp_path / "cache"))
    url = "https://models.example/tiny.zip"
    serve(monkeypatch, {url: zip_package(folder, tmp_path / "tiny.zip")})
    registry = write_registry(tmp_path / "models.json", [entry("remote", "f" * 64, url=url)])
    with pytest.raises(InputError, match="checksum"):
        load_package("remote", registry=registry)
    assert not (tmp_path / "cache" / "remote" / "1.2.3").exists()


def test_download_of_non_zip_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CACSCORING_CACHE", str(tmp_path / "cache"))
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    serve(monkeypatch, {"https://models.example/junk.zip": junk})
    registry = write_registry(tmp_path / "models.json", [entry("remote", "f" * 64, url="https://models.example/junk.zip")])
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


# --- Packages and the registry stay inside their folders (issue 16) ---


def heart_config():
    return make_config("UNet", 2, (16, 16), task="heart_roi", channels=(4, 8), strides=(2,), num_res_units=0)


@pytest.fixture
def cascade_folder(tmp_path):
    """A calcium package with a heart ROI component."""
    torch.manual_seed(0)
    config, heart = tiny_config(), heart_config()
    components = {"heart_roi": (build_network(heart), heart)}
    return save_package(tmp_path / "cascade", build_network(config), config, {"id": "cascade"}, components)


def one_line_error(call, match):
    with pytest.raises(InputError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("key", ["version", "id"])
def test_registry_entry_climbing_out_of_the_cache_is_refused_before_anything_is_touched(tmp_path, monkeypatch, key):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CACSCORING_CACHE", str(cache))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    monkeypatch.setattr(registry_module, "_open_url", lambda url: pytest.fail("nothing may be downloaded"))
    raw = entry("remote", "f" * 64, url="https://models.example/x.zip")
    raw[key] = "../../../victim"
    one_line_error(lambda: write_registry(tmp_path / "models.json", [raw]), f"{key} '../../../victim'")
    assert (victim / "precious.txt").read_text() == "keep me" and not cache.exists()


@pytest.mark.parametrize("text", ["[]", '"models"', '{"models": {"id": "x"}}', '{"models": ["x"]}'])
def test_malformed_registry_is_a_one_line_error(tmp_path, text):
    (tmp_path / "models.json").write_text(text)
    one_line_error(lambda: Registry.load(tmp_path / "models.json"), "fix models.json")


def test_registry_path_outside_its_folder_is_refused(tmp_path):
    (tmp_path / "registry").mkdir()
    raw = entry("local", "f" * 64, path="../elsewhere")
    one_line_error(lambda: write_registry(tmp_path / "registry" / "models.json", [raw]), "outside the registry's folder")


@pytest.mark.parametrize("url", ["file:///tmp/tiny.zip", "http://models.example/tiny.zip", "ftp://models.example/x.zip"])
def test_only_https_urls_are_downloaded(tmp_path, url):
    one_line_error(lambda: write_registry(tmp_path / "models.json", [entry("remote", "f" * 64, url=url)]), "only https://")


def test_a_redirect_to_plain_http_is_not_followed():
    import urllib.request

    request = urllib.request.Request("https://models.example/tiny.zip")
    handler = registry_module._HttpsOnlyRedirects()
    with pytest.raises(InputError, match="only https:// is followed"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://models.example/tiny.zip")
    assert handler.redirect_request(request, None, 302, "Found", {}, "https://cdn.example/tiny.zip").full_url == (
        "https://cdn.example/tiny.zip"
    )


def test_a_symlink_in_the_cache_is_not_followed_by_a_download(package_folder, tmp_path, monkeypatch):
    folder, _ = package_folder
    cache = tmp_path / "cache"
    monkeypatch.setenv("CACSCORING_CACHE", str(cache))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    (cache / "remote").mkdir(parents=True)
    (cache / "remote" / "1.2.3").symlink_to(victim, target_is_directory=True)
    url = "https://models.example/tiny.zip"
    serve(monkeypatch, {url: zip_package(folder, tmp_path / "tiny.zip")})
    registry = write_registry(tmp_path / "models.json", [entry("remote", sha256_file(folder / "checksums.json"), url=url)])
    one_line_error(lambda: load_package("remote", registry=registry), "symbolic link")
    assert [p.name for p in victim.iterdir()] == ["precious.txt"]


def test_a_second_download_replaces_the_old_install_only_once_the_new_one_verifies(package_folder, tmp_path, monkeypatch):
    folder, _ = package_folder
    monkeypatch.setenv("CACSCORING_CACHE", str(tmp_path / "cache"))
    url = "https://models.example/tiny.zip"
    serve(monkeypatch, {url: zip_package(folder, tmp_path / "tiny.zip")})
    good = entry("remote", sha256_file(folder / "checksums.json"), url=url)
    registry = write_registry(tmp_path / "models.json", [good])
    installed = registry_module.download(registry.entry("remote"), registry.folder(registry.entry("remote")), progress=False)
    before = sha256_file(installed / "model.safetensors")
    bad = write_registry(tmp_path / "models.json", [{**good, "sha256": "0" * 64}])
    one_line_error(lambda: registry_module.download(bad.entry("remote"), installed, progress=False), "registry checksum")
    assert sha256_file(installed / "model.safetensors") == before  # the old install is intact
    registry_module.download(registry.entry("remote"), installed, progress=False)  # a good one replaces it
    assert sorted(p.name for p in installed.parent.iterdir()) == ["1.2.3"]


def test_checksums_cover_every_file_so_a_swapped_component_is_detected(cascade_folder, tmp_path, monkeypatch):
    listed = json.loads((cascade_folder / "checksums.json").read_text())["sha256"]
    assert set(listed) == {"config.json", "metadata.json", "model.safetensors", "heart_roi/checksums.json"}
    component = json.loads((cascade_folder / "heart_roi" / "checksums.json").read_text())["sha256"]
    assert set(component) == {"config.json", "metadata.json", "model.safetensors"}

    # A download whose component file is corrupt is refused before it is installed.
    monkeypatch.setenv("CACSCORING_CACHE", str(tmp_path / "cache"))
    url = "https://models.example/cascade.zip"
    corrupt = shutil.copytree(cascade_folder, tmp_path / "corrupt")
    (corrupt / "heart_roi" / "model.safetensors").write_bytes(b"corrupt")
    serve(monkeypatch, {url: zip_package(corrupt, tmp_path / "corrupt.zip")})
    registry = write_registry(tmp_path / "models.json", [entry("remote", sha256_file(cascade_folder / "checksums.json"), url=url)])
    one_line_error(lambda: load_package("remote", registry=registry), "checksum mismatch for .*heart_roi/model.safetensors")
    assert not (tmp_path / "cache" / "remote" / "1.2.3").exists()

    # An attacker swaps the component's weights and rewrites its own checksums.json to match ...
    swapped = tmp_path / "swapped"
    shutil.copytree(cascade_folder, swapped)
    other = build_network(heart_config())
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    from safetensors.torch import save_model

    save_model(other, str(swapped / "heart_roi" / "model.safetensors"))
    rewrite_checksums(swapped / "heart_roi", ["config.json", "metadata.json", "model.safetensors"])
    one_line_error(lambda: load_package(swapped), "checksum mismatch for .*heart_roi/checksums.json")
    # ... and the package's checksums.json too: then the registry's SHA-256 (of that file) no longer matches.
    rewrite_checksums(swapped, list(listed))
    assert load_package(swapped).components["heart_roi"].network is not None  # consistent on its own
    serve(monkeypatch, {url: zip_package(swapped, tmp_path / "swapped.zip")})
    registry = write_registry(tmp_path / "models.json", [entry("remote", sha256_file(cascade_folder / "checksums.json"), url=url)])
    one_line_error(lambda: load_package("remote", registry=registry), "registry checksum")
    assert not (tmp_path / "cache" / "remote" / "1.2.3").exists()


def test_metadata_is_covered_by_the_checksums(package_folder):
    folder, _ = package_folder
    (folder / "metadata.json").write_text(json.dumps({"id": "shipped-model", "version": "9.9.9"}))
    one_line_error(lambda: load_package(folder), "checksum mismatch for .*metadata.json")
    rewrite_checksums(folder, ["config.json", "model.safetensors"])
    one_line_error(lambda: load_package(folder), "does not list metadata.json")


def rewrite_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    rewrite_checksums(folder, ["config.json", "metadata.json", "model.safetensors", "heart_roi/checksums.json"])


@pytest.mark.parametrize(
    ("components", "match"),
    [
        ({"heart_roi": "../outside_pkg"}, "not a path inside the package"),
        ({"heart_roi": "/etc"}, "not a path inside the package"),
        ({"../../x": "heart_roi"}, "unknown component '../../x'"),
        ({"heart_roi": ["heart_roi"]}, "not a path inside the package"),
        ({"heart_roi": "heart_roi/../heart_roi"}, "not a path inside the package"),
        ({"heart_roi": "heart_roi/."}, "not a sub-folder listed in checksums.json"),
    ],
)
def test_component_names_and_paths_stay_inside_the_package(cascade_folder, tmp_path, components, match):
    outside = tmp_path / "outside_pkg"
    shutil.copytree(cascade_folder / "heart_roi", outside)
    rewrite_config(cascade_folder, lambda config: config.update(components=components))
    one_line_error(lambda: load_package(cascade_folder), match)


def test_a_component_folder_symlinked_elsewhere_is_refused(cascade_folder, tmp_path):
    shutil.move(cascade_folder / "heart_roi", tmp_path / "elsewhere")
    (cascade_folder / "heart_roi").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    one_line_error(lambda: load_package(cascade_folder), "symbolic link")


def test_symlinked_weights_and_checksum_entries_outside_the_package_are_refused(package_folder, tmp_path):
    folder, _ = package_folder
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"secret")
    listing = json.loads((folder / "checksums.json").read_text())
    listing["sha256"]["../secret.bin"] = sha256_file(secret)
    (folder / "checksums.json").write_text(json.dumps(listing))
    one_line_error(lambda: load_package(folder), "'../secret.bin' .* not a path inside the package")

    rewrite_checksums(folder, ["config.json", "metadata.json", "model.safetensors"])
    shutil.move(folder / "model.safetensors", tmp_path / "weights.safetensors")
    (folder / "model.safetensors").symlink_to(tmp_path / "weights.safetensors")
    one_line_error(lambda: load_package(folder), "'model.safetensors' .* symbolic link")


def test_a_component_must_have_the_task_its_name_says(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    network = build_network(config)
    # A calcium model saved as the heart ROI.
    folder = save_package(tmp_path / "p", network, config, {}, {"heart_roi": (build_network(config), config)})
    message = one_line_error(lambda: load_package(folder), "component 'heart_roi'")
    assert "is a calcium model, not a heart_roi model" in message


@pytest.mark.parametrize("listing", ["[1, 2]", '"config.json"', '{"sha256": ["config.json"]}', '{"sha256": {"config.json": "abc"}}'])
def test_malformed_checksums_json_is_a_one_line_error(package_folder, listing):
    folder, _ = package_folder
    (folder / "checksums.json").write_text(listing)
    one_line_error(lambda: load_package(folder), "checksums.json")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c.clear() or c.update(x=1), "lacks 'task'"),
        (lambda c: c.update(network=["UNet"]), "'network' is a list"),
        (lambda c: c.update(labels="0,1,2,3,4"), "'labels' is a str"),
        (lambda c: c.update(in_channels=10**9 + 1), "in_channels 1000000001"),
        (lambda c: c["preprocessing"].update(patch_size=[10**6, 10**6]), "patch_size"),
        (lambda c: c["preprocessing"].update(hu_window="ab"), "hu_window 'ab'"),
        (lambda c: c["preprocessing"].update(inplane_spacing_mm="0.8"), "inplane_spacing_mm '0.8'"),
        (lambda c: c["network"]["kwargs"].update(channels=[4, 10**9]), r"[\d,]{14,} weights but model.safetensors holds"),
    ],
)
def test_malformed_config_json_is_a_one_line_error_without_a_huge_allocation(package_folder, change, match):
    folder, _ = package_folder
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    rewrite_checksums(folder, ["config.json", "metadata.json", "model.safetensors"])
    one_line_error(lambda: load_package(folder), match)


@pytest.mark.parametrize("text", ["[1, 2]", '"a string"'])
def test_config_json_that_is_not_an_object_is_a_one_line_error(package_folder, text):
    folder, _ = package_folder
    (folder / "config.json").write_text(text)
    rewrite_checksums(folder, ["config.json", "metadata.json", "model.safetensors"])
    one_line_error(lambda: load_package(folder), "holds a JSON (list|str), not an object")


def test_a_package_moves_to_the_inference_device_with_its_components(cascade_folder):
    from CACScoringLib.inference.pipeline import load_models

    package = load_package(cascade_folder)  # on CPU; "meta" stands in for a GPU
    [moved] = load_models(package, torch.device("meta"))
    assert moved.device == torch.device("meta") and moved.components["heart_roi"].device == torch.device("meta")
    for network in (moved.network, moved.components["heart_roi"].network):
        assert {parameter.device.type for parameter in network.parameters()} == {"meta"}


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
