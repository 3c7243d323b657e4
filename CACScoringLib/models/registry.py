"""The model registry (Resources/models.json) and the download cache.

    {"default": <id or null>,
     "models": [{"id", "title", "dims", "path" (folder relative to the registry file) or "url" (a .zip of
                 the package folder), "sha256" (of the weights file), "version", "description"}]}

Downloaded models go to $CACSCORING_CACHE or ~/.cache/cacscoring/<id>/<version>/.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..resources import resources_dir

REGISTRY_FILE = "models.json"
REQUIRED_KEYS = ("id", "title", "dims", "sha256", "version")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    title: str
    dims: int
    sha256: str
    version: str
    description: str = ""
    path: str | None = None
    url: str | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("CACSCORING_CACHE") or Path.home() / ".cache" / "cacscoring")


class Registry:
    def __init__(self, data: dict, base: Path):
        self.base = Path(base)
        self.default: str | None = data.get("default")
        self.entries: list[ModelEntry] = []
        for raw in data.get("models", []):
            missing = [k for k in REQUIRED_KEYS if k not in raw]
            if missing or not (raw.get("path") or raw.get("url")):
                raise InputError(f"model registry entry {raw.get('id', '?')} lacks {missing or ['path or url']}")
            self.entries.append(ModelEntry(**{k: raw[k] for k in ModelEntry.__dataclass_fields__ if k in raw}))
        if self.default is not None and self.default not in self.ids:
            raise InputError(f"model registry default '{self.default}' is not among its models; fix {REGISTRY_FILE}")

    @classmethod
    def load(cls, path: str | Path | None = None) -> Registry:
        path = Path(path) if path else resources_dir() / REGISTRY_FILE
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read the model registry {path}: {error}") from error
        return cls(data, path.parent)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    def entry(self, model_id: str) -> ModelEntry:
        for e in self.entries:
            if e.id == model_id:
                return e
        known = ", ".join(self.ids) or "none"
        raise InputError(f"unknown model '{model_id}' (registered: {known}); give a registry id or a model folder")

    def default_id(self) -> str:
        if self.default is None:
            raise InputError(
                "no trained default segmentation model is installed yet (models.json default is null); "
                "score with --labels LABELMAP or pass a trained model folder"
            )
        return self.default

    def folder(self, entry: ModelEntry) -> Path:
        """Where the package lives (shipped) or would live once downloaded."""
        if entry.path:
            return (self.base / entry.path).resolve()
        return cache_dir() / entry.id / entry.version

    def is_installed(self, entry: ModelEntry) -> bool:
        return (self.folder(entry) / "config.json").is_file()

    def locate(self, model_id: str, progress: bool = True) -> tuple[Path, str]:
        """(package folder, expected weights SHA-256), downloading a URL model on first use."""
        entry = self.entry(model_id)
        if not self.is_installed(entry):
            if not entry.url:
                raise InputError(f"model '{entry.id}' is registered but {self.folder(entry)} is missing; reinstall it")
            download(entry, self.folder(entry), progress=progress)
        return self.folder(entry), entry.sha256


def download(entry: ModelEntry, target: Path, progress: bool = True) -> Path:
    """Fetch a zipped package into `target` with a progress bar; verify the weights checksum."""
    from tqdm import tqdm

    from .package import sha256_file

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "package.zip"
        try:
            with urllib.request.urlopen(entry.url) as response, open(archive, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"model {entry.id}", disable=not progress) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as error:
            raise InputError(f"cannot download model '{entry.id}' from {entry.url}: {error}") from error
        extracted = Path(tmp) / "extracted"
        _safe_extract(archive, extracted, entry.id)
        package = _package_root(extracted, entry.id)
        weights = package / "model.safetensors"
        if not weights.is_file() or sha256_file(weights) != entry.sha256:
            raise InputError(f"downloaded model '{entry.id}' fails its weights checksum; the download is corrupt")
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(package), str(target))
    return target


def _safe_extract(archive: Path, destination: Path, model_id: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                resolved = (destination / name).resolve()
                if not resolved.is_relative_to(destination.resolve()):
                    raise InputError(f"downloaded model '{model_id}' archive has an unsafe path {name!r}")
            zf.extractall(destination)
    except zipfile.BadZipFile as error:
        raise InputError(f"downloaded model '{model_id}' is not a zip archive; check the registry URL") from error


def _package_root(extracted: Path, model_id: str) -> Path:
    if (extracted / "config.json").is_file():
        return extracted
    children = [p for p in extracted.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "config.json").is_file():
        return children[0]
    raise InputError(f"downloaded model '{model_id}' archive holds no model package (config.json)")


def list_models(registry: Registry | None = None) -> list[dict]:
    """Rows for `cacscoring models`: id, title, dims, installed, default."""
    registry = registry or Registry.load()
    return [
        {
            "id": e.id,
            "title": e.title,
            "dims": e.dims,
            "version": e.version,
            "installed": registry.is_installed(e),
            "source": "shipped" if e.path else e.url,
            "default": e.id == registry.default,
        }
        for e in registry.entries
    ]
