"""Model packages: a folder in the spirit of a MONAI bundle.

    config.json      network name + kwargs, spatial_dims, preprocessing, labels, components
    model.safetensors  weights (a state_dict `model.pt` is accepted, loaded with weights_only=True)
    metadata.json    id, version, training data, measured accuracy, monai/torch versions, created
    checksums.json   SHA-256 of every other file in the folder (documentation included); a component's
                     files through its own checksums.json, which is listed here. So this one file's SHA-256
                     (the registry's `sha256`) pins the whole package.
    <component>/     optional sub-packages named in config["components"] ("heart_roi", "fp_classifier",
                     "lesion_classifier"), each of the task its name says

Every path is resolved inside the package and symbolic links are refused.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import torch
from torch import nn

from .. import __version__
from ..errors import InputError
from .networks import build_network, validate_config
from .registry import SHA256_HEX

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
CHECKSUM_FILE = "checksums.json"
WEIGHTS_FILE = "model.safetensors"
STATE_DICT_FILE = "model.pt"
COMPONENT_NAMES = ("heart_roi", "fp_classifier", "lesion_classifier")


@dataclass
class ModelPackage:
    """A loaded model: network in eval mode on `device`, its config and metadata."""

    folder: Path
    config: dict
    metadata: dict
    network: nn.Module
    device: torch.device
    components: dict[str, ModelPackage] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.metadata.get("id", self.folder.name))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))

    @property
    def spatial_dims(self) -> int:
        return int(self.config["spatial_dims"])

    @property
    def weights_path(self) -> Path:
        return _weights_file(self.folder)

    def to(self, device: torch.device) -> ModelPackage:
        """Move the network and every component's network to `device` (in place)."""
        self.network.to(device)
        self.device = device
        for component in self.components.values():
            component.to(device)
        return self


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available else CPU; asking for CUDA without one is an InputError."""
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device '{device}' requested but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device '{device}'; use auto, cuda or cpu")


def save_package(
    folder: str | Path,
    network: nn.Module,
    config: dict,
    metadata: dict | None = None,
    components: Mapping[str, tuple[nn.Module, dict]] | None = None,
) -> Path:
    """Write a model package (config, safetensors weights, metadata, checksums) and return its folder.

    metadata may hold any of: id (default: folder name), version (default "0.1.0"), title, description,
    training_data, accuracy (dict of measured figures); versions and creation time are added here.
    components maps COMPONENT_NAMES to (network, config) and is saved as sub-packages."""
    from monai import __version__ as monai_version
    from safetensors.torch import save_model

    folder = Path(folder)
    validate_config(config)
    _check_network_matches(network, config)
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(config))  # a plain JSON copy; also rejects non-serialisable values
    config["components"] = {}
    for name, (component_network, component_config) in (components or {}).items():
        if name not in COMPONENT_NAMES:
            raise InputError(f"unknown model component '{name}'; use one of {', '.join(COMPONENT_NAMES)}")
        save_package(folder / name, component_network, component_config, {"id": f"{folder.name}-{name}"})
        config["components"][name] = name
    meta = {
        "id": folder.name,
        "version": "0.1.0",
        "training_data": None,
        "accuracy": None,
        **(metadata or {}),
        "monai_version": monai_version,
        "torch_version": torch.__version__,
        "cacscoring_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / STATE_DICT_FILE).unlink(missing_ok=True)
    save_model(network, str(folder / WEIGHTS_FILE))
    _write_json(folder / CONFIG_FILE, config)
    _write_json(folder / METADATA_FILE, meta)
    seal_package(folder)
    return folder


def seal_package(folder: str | Path) -> str:
    """(Re)write checksums.json to list every file in the package folder (a component by its own
    checksums.json); returns that file's SHA-256, the registry's `sha256` for the package."""
    folder = Path(folder)
    config = _read_json_object(folder / CONFIG_FILE)
    components = set((config.get("components") or {}).values())
    listed = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise InputError(f"{path} is a symbolic link; a model package holds plain files only")
        top = name.split("/")[0]
        if path.is_dir() or name == CHECKSUM_FILE or (top in components and name != f"{top}/{CHECKSUM_FILE}"):
            continue
        listed[name] = sha256_file(path)
    _write_json(folder / CHECKSUM_FILE, {"sha256": listed})
    return sha256_file(folder / CHECKSUM_FILE)


def load_package(
    folder_or_id: str | Path | ModelPackage,
    device: str | torch.device = "cpu",
    registry=None,
) -> ModelPackage:
    """Load a package folder or a registry id (downloading into the cache if needed), checksums verified."""
    if isinstance(folder_or_id, ModelPackage):
        return folder_or_id
    path = Path(folder_or_id)
    expected_package_sha = None
    if not path.is_dir():
        from .registry import Registry

        registry = registry or Registry.load()
        path, expected_package_sha = registry.locate(str(folder_or_id))
    return _load_folder(path, resolve_device(device), expected_package_sha)


def verify_checksums(folder: Path) -> dict[str, str]:
    """Compare every file listed in checksums.json with its SHA-256 (config, weights and metadata must be
    listed); InputError names the first problem. Returns the listing."""
    folder = Path(folder)
    checksum_path = _inside(folder, CHECKSUM_FILE, "file")
    if not checksum_path.is_file():
        raise InputError(f"model package {folder} has no {CHECKSUM_FILE}; re-export it with save_package()")
    listed = _read_json_object(checksum_path).get("sha256")
    if not isinstance(listed, dict) or not all(
        isinstance(digest, str) and SHA256_HEX.fullmatch(digest) for digest in listed.values()
    ):
        raise InputError(
            f"{checksum_path} must map each file to its SHA-256 (64 hex digits) under 'sha256'; reinstall the model package"
        )
    required = [CONFIG_FILE, _weights_file(folder).name] + ([METADATA_FILE] if (folder / METADATA_FILE).exists() else [])
    for name in required:
        if name not in listed:
            raise InputError(f"{CHECKSUM_FILE} in {folder} does not list {name}; re-export the model package")
    for name, expected in listed.items():
        target = _inside(folder, name, f"{CHECKSUM_FILE} entry")
        if not target.is_file():
            raise InputError(f"model file {target} is missing; reinstall the model package")
        if sha256_file(target) != expected:
            raise InputError(f"checksum mismatch for {target}: the file is corrupt or was changed; reinstall the model")
    return listed


def verify_package_files(folder: Path) -> None:
    """verify_checksums for the package and, through the checksums.json files it lists, every sub-package."""
    for name in verify_checksums(folder):
        if name.endswith(f"/{CHECKSUM_FILE}"):
            verify_package_files(_inside(folder, name, f"{CHECKSUM_FILE} entry").parent)


def _inside(folder: Path, name, what: str) -> Path:
    """folder/name, refused unless `name` is a relative path that stays inside `folder` through no symbolic link."""
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if not parts or name.startswith("/") or "\\" in name or any(part in (".", "..") for part in parts):
        raise InputError(f"{what} {name!r} in {folder} is not a path inside the package; re-export the model package")
    root = Path(folder).resolve()
    path = root.joinpath(*parts)
    if path.resolve() != path:
        raise InputError(
            f"{what} {name!r} in {folder} is or passes through a symbolic link; a model package holds plain files only"
        )
    return path


def _load_folder(
    folder: Path, device: torch.device, expected_package_sha: str | None = None, component: str | None = None
) -> ModelPackage:
    if not (folder / CONFIG_FILE).is_file():
        raise InputError(f"{folder} is not a model package (no {CONFIG_FILE}); give a model folder or registry id")
    listed = verify_checksums(folder)
    if expected_package_sha and sha256_file(folder / CHECKSUM_FILE) != expected_package_sha:
        raise InputError(
            f"package {folder} does not match the registry checksum (SHA-256 of its {CHECKSUM_FILE}); "
            "reinstall or re-download the model"
        )
    config = _read_json_object(folder / CONFIG_FILE)
    validate_config(config)
    if component and config["task"] != component:
        raise InputError(
            f"component '{component}' of {folder.parent} is a {config['task']} model, not a {component} model; "
            f"re-export the package with a {component} model"
        )
    metadata = _read_json_object(folder / METADATA_FILE) if (folder / METADATA_FILE).is_file() else {}
    weights = _weights_file(folder)
    network = _build_for_weights(config, weights)
    _load_weights(network, weights)
    network.to(device).eval()
    components = {
        name: _load_folder(sub, device, component=name) for name, sub in _component_folders(folder, config, listed).items()
    }
    return ModelPackage(folder, config, metadata, network, device, components)


def _component_folders(folder: Path, config: dict, listed: dict) -> dict[str, Path]:
    """config["components"] checked: known names, each a plain sub-folder whose checksums.json the package lists."""
    components = config.get("components") or {}
    if not isinstance(components, dict):
        raise InputError(f"{folder / CONFIG_FILE} components must map component names to sub-folders")
    folders = {}
    for name, sub in components.items():
        if name not in COMPONENT_NAMES:
            raise InputError(f"{folder / CONFIG_FILE} names an unknown component {name!r}; use {', '.join(COMPONENT_NAMES)}")
        path = _inside(folder, sub, f"component {name}")
        if not isinstance(sub, str) or "/" in sub or f"{sub}/{CHECKSUM_FILE}" not in listed:
            raise InputError(
                f"component {name} folder {sub!r} in {folder} is not a sub-folder listed in {CHECKSUM_FILE}; "
                "re-export the model package"
            )
        folders[name] = path
    return folders


def _build_for_weights(config: dict, weights: Path) -> nn.Module:
    """The config's network, refused before allocation when it has more weights than the file has bytes."""
    with torch.device("meta"):
        skeleton = build_network(config)
    count = sum(tensor.numel() for tensor in skeleton.state_dict().values())
    size = weights.stat().st_size
    if count > size:
        raise InputError(
            f"{CONFIG_FILE} in {weights.parent} describes a network of {count:,} weights but {weights.name} holds "
            f"{size:,} bytes; the config does not belong to these weights"
        )
    return build_network(config)


def _load_weights(network: nn.Module, weights: Path) -> None:
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        try:
            load_model(network, str(weights), strict=True, device="cpu")
        except (SafetensorError, RuntimeError, OSError) as error:
            raise InputError(f"weights {weights} do not fit the network in config.json: {_first_line(error)}") from error
        return
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise InputError(
            f"{weights} is not a plain state_dict (refused to unpickle arbitrary objects); save weights as safetensors"
        ) from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{weights} is not a state_dict of tensors; save weights as safetensors")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise InputError(f"weights {weights} do not fit the network in config.json: {_first_line(error)}") from error


def _weights_file(folder: Path) -> Path:
    safetensors_path = folder / WEIGHTS_FILE
    if safetensors_path.is_file() or not (folder / STATE_DICT_FILE).is_file():
        return safetensors_path
    return folder / STATE_DICT_FILE


def _check_network_matches(network: nn.Module, config: dict) -> None:
    """Refuse to save weights that the config could not rebuild (a package that would not load)."""
    try:
        build_network(config).load_state_dict(network.state_dict(), strict=True)
    except RuntimeError as error:
        raise InputError(f"the network does not match the config's architecture: {_first_line(error)}") from error


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _read_json_object(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); reinstall the model package") from error
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}; reinstall the model package") from error
    if not isinstance(data, dict):
        raise InputError(f"{path} holds a JSON {type(data).__name__}, not an object; reinstall the model package")
    return data


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
