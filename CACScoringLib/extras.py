"""Optional dependencies (pyproject extras): imported where needed, or a one-line error naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import InputError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module`, which the `extra` of pyproject.toml installs; InputError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise InputError(
            f'{purpose} needs the optional package {module}, which is not installed; install it with '
            f'pip install "cacscoring[{extra}]" (or pip install ".[{extra}]" in a source checkout)'
        ) from error
