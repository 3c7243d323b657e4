"""The model registry (Resources/models.json) and the download cache.

    {"default": <id or null>,
     "models": [{"id", "title", "dims", "path" (folder inside the registry file's folder) or "url" (an
                 https:// .zip of the package folder), "sha256" (of the package's checksums.json, which
                 lists the SHA-256 of every file in the package), "version", "description"}]}

Downloaded models go to $CACSCORING_CACHE or ~/.cache/cacscoring/<id>/<version>/; id and version are plain
names (letters, digits, ".", "_", "+", "-"), so that folder always lies inside the cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..resources import resources_dir

SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # a SHA-256 as hex; the package module (torch) is loaded only to install

REGISTRY_FILE = "models.json"
REQUIRED_KEYS = ("id", "title", "dims", "sha256", "version")
# One path segment that cannot climb out of its folder or hide (no "/", "\\", leading "." or "..").
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


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
        if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
            raise InputError(f'model registry in {self.base} must be {{"default": ..., "models": [...]}}; fix {REGISTRY_FILE}')
        self.default: str | None = data.get("default")
        self.entries: list[ModelEntry] = []
        for raw in data.get("models", []):
            if not isinstance(raw, dict):
                raise InputError(f"model registry entry {raw!r} is not an object; fix {REGISTRY_FILE}")
            missing = [k for k in REQUIRED_KEYS if k not in raw]
            if missing or not (raw.get("path") or raw.get("url")):
                raise InputError(f"model registry entry {raw.get('id', '?')} lacks {missing or ['path or url']}")
            entry = ModelEntry(**{k: raw[k] for k in ModelEntry.__dataclass_fields__ if k in raw})
            self._check_entry(entry)
            self.entries.append(entry)
        if self.default is not None and self.default not in self.ids:
            raise InputError(f"model registry default '{self.default}' is not among its models; fix {REGISTRY_FILE}")

    def _check_entry(self, entry: ModelEntry) -> None:
        """Refuse an entry that would read or write outside its folder, or download without TLS."""
        for key in ("id", "version"):
            value = getattr(entry, key)
            if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value):
                raise InputError(
                    f"model registry entry {entry.id!r} has {key} {value!r}; use a plain name of letters, digits, "
                    "'.', '_', '+' or '-' (it names a cache folder)"
                )
        if not isinstance(entry.sha256, str) or not SHA256_HEX.fullmatch(entry.sha256):
            raise InputError(f"model registry entry {entry.id!r} has sha256 {entry.sha256!r}; give 64 lower-case hex digits")
        if entry.url is not None:
            parts = urllib.parse.urlsplit(str(entry.url))
            if parts.scheme != "https" or not parts.netloc:
                raise InputError(
                    f"model registry entry {entry.id!r} has url {entry.url!r}; only https:// URLs are downloaded "
                    "(or give a local 'path')"
                )
        if entry.path is not None:
            folder = (self.base / str(entry.path)).resolve()
            if not folder.is_relative_to(self.base.resolve()):
                raise InputError(
                    f"model registry entry {entry.id!r} has path {entry.path!r} outside the registry's folder "
                    f"{self.base}; give a folder inside it"
                )

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
        cache = cache_dir().resolve()
        folder = cache / entry.id / entry.version
        if folder.resolve() != folder:  # a symlink inside the cache would lead the download elsewhere
            raise InputError(f"cache folder {folder} is or passes through a symbolic link; remove it and retry")
        return folder

    def is_installed(self, entry: ModelEntry) -> bool:
        return (self.folder(entry) / "config.json").is_file()

    def locate(self, model_id: str, progress: bool = True) -> tuple[Path, str]:
        """(package folder, expected SHA-256 of its checksums.json), downloading a URL model on first use."""
        entry = self.entry(model_id)
        if not self.is_installed(entry):
            if not entry.url:
                raise InputError(f"model '{entry.id}' is registered but {self.folder(entry)} is missing; reinstall it")
            download(entry, self.folder(entry), progress=progress)
        return self.folder(entry), entry.sha256


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to https:// only: a redirect must not downgrade the download to plain http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise InputError(f"download of {req.full_url} redirects to {newurl}; only https:// is followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open_url(url: str):
    return urllib.request.build_opener(_HttpsOnlyRedirects).open(url, timeout=60)


def download(entry: ModelEntry, target: Path, progress: bool = True) -> Path:
    """Fetch a zipped package into `target` with a progress bar; verify that the package's checksums.json has
    the registry's SHA-256 and that every file matches it before replacing anything."""
    from tqdm import tqdm

    from .package import CHECKSUM_FILE, sha256_file, verify_package_files

    if urllib.parse.urlsplit(str(entry.url)).scheme != "https":
        raise InputError(f"model '{entry.id}' url {entry.url!r} is not https://; only https:// URLs are downloaded")
    cache = cache_dir().resolve()
    if not target.resolve().is_relative_to(cache) or target.resolve() == cache:
        raise InputError(f"model '{entry.id}' would be installed at {target}, outside the cache {cache}; fix the registry")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "package.zip"
        try:
            with _open_url(entry.url) as response, open(archive, "wb") as out:
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
        listing = package / CHECKSUM_FILE
        if not listing.is_file() or listing.is_symlink() or sha256_file(listing) != entry.sha256:
            raise InputError(f"downloaded model '{entry.id}' fails the registry checksum; the download is corrupt")
        verify_package_files(package)
        if target.exists():  # moved aside, not deleted, until the new package is in place
            target.rename(Path(tmp) / "previous")
        shutil.move(str(package), str(target))
    return target


def _safe_extract(archive: Path, destination: Path, model_id: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                resolved = (destination / info.filename).resolve()
                if not resolved.is_relative_to(destination.resolve()):
                    raise InputError(f"downloaded model '{model_id}' archive has an unsafe path {info.filename!r}")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink entry (S_IFLNK)
                    raise InputError(f"downloaded model '{model_id}' archive holds a symbolic link {info.filename!r}")
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
