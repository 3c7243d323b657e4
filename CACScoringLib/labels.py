"""The label contract (Resources/labels.json): 0 background, 1 LM, 2 LAD, 3 LCX, 4 RCA."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .resources import load_json


@dataclass(frozen=True)
class ArteryLabel:
    id: int
    key: str
    name: str
    color: tuple[int, int, int]
    anatomic_region: dict
    coca_roi_names: tuple[str, ...]


def _load() -> tuple[ArteryLabel, ...]:
    contract = load_json("labels.json")
    arteries = []
    for entry in contract["labels"]:
        if entry["id"] == 0:
            continue
        arteries.append(
            ArteryLabel(
                id=int(entry["id"]),
                key=entry["key"],
                name=entry["name"],
                color=tuple(entry["color"]),
                anatomic_region=entry["anatomicRegion"],
                coca_roi_names=tuple(entry.get("coca_roi_names", ())),
            )
        )
    return tuple(sorted(arteries, key=lambda a: a.id))


ARTERY_LABELS: tuple[ArteryLabel, ...] = _load()
ARTERIES: tuple[str, ...] = tuple(a.key for a in ARTERY_LABELS)  # ("LM", "LAD", "LCX", "RCA")
LABEL_ID: dict[str, int] = {a.key: a.id for a in ARTERY_LABELS}
ARTERY_BY_ID: dict[int, str] = {a.id: a.key for a in ARTERY_LABELS}
MAX_LABEL: int = max(ARTERY_BY_ID)
TERMINOLOGY = load_json("labels.json")  # category/type codes for the Slicer terminology


def coca_roi_to_label() -> dict[str, int]:
    """COCA XML ROI name -> label id."""
    return {name: a.id for a in ARTERY_LABELS for name in a.coca_roi_names}


def votes_per_region(regions: np.ndarray, count: int, labels: np.ndarray) -> np.ndarray:
    """(count + 1, MAX_LABEL + 1) table: voxels of each label id > 0 in each of `count` labelled regions
    (row 0: voxels outside every region; column 0 stays 0)."""
    labelled = labels > 0
    pairs = regions[labelled].astype(np.int64) * (MAX_LABEL + 1) + labels[labelled]
    return np.bincount(pairs, minlength=(count + 1) * (MAX_LABEL + 1)).reshape(count + 1, MAX_LABEL + 1)
