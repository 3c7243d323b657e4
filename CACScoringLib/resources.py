"""Locate the Resources/ folder both in the source tree (Slicer, editable install) and in a wheel."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources as importlib_resources
from pathlib import Path


@cache
def resources_dir() -> Path:
    source_tree = Path(__file__).resolve().parent.parent / "Resources"
    if (source_tree / "labels.json").is_file():
        return source_tree
    return Path(str(importlib_resources.files("CACScoringLib._resources")))


def load_json(name: str) -> dict:
    with open(resources_dir() / name, encoding="utf-8") as f:
        return json.load(f)
