"""Slicer terminology for the CACScoring segments, generated from the label contract (Resources/labels.json).

Every segment is coded as category "Morphologically Altered Structure" / type "Pathologic calcification"
with the artery as anatomic region: the way DICOM SEG codes calcium per vessel. The checked-in files in
CACScoring/Resources are the output of `write_terminology_files`; a test keeps them in sync.

Run `python -m CACScoringSlicerLib.terminology OUTPUT_DIR` (from CACScoring/) to regenerate them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from CACScoringLib.labels import ARTERY_LABELS, TERMINOLOGY, ArteryLabel

TERMINOLOGY_CONTEXT = "CACScoring - Coronary artery calcium"
ANATOMIC_CONTEXT = "CACScoring - Coronary arteries"
TERMINOLOGY_FILE = "CACScoring-CategoryType.term.json"
ANATOMIC_FILE = "CACScoring-AnatomicRegions.json"
_SCHEMA_BASE = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/"
CALCIFICATION_RGB = [241, 214, 145]  # Slicer's bone colour; each segment carries its artery's colour


def _code(entry: dict) -> dict:
    return {key: entry[key] for key in ("CodeMeaning", "CodingSchemeDesignator", "CodeValue")}


def category_type_context() -> dict:
    calcification = {**_code(TERMINOLOGY["type"]), "recommendedDisplayRGBValue": CALCIFICATION_RGB}
    return {
        "SegmentationCategoryTypeContextName": TERMINOLOGY_CONTEXT,
        "@schema": _SCHEMA_BASE + "segment-context-schema.json#",
        "SegmentationCodes": {"Category": [{**_code(TERMINOLOGY["category"]), "Type": [calcification]}]},
    }


def anatomic_context() -> dict:
    regions = [{**_code(a.anatomic_region), "recommendedDisplayRGBValue": list(a.color)} for a in ARTERY_LABELS]
    return {
        "AnatomicContextName": ANATOMIC_CONTEXT,
        "@schema": _SCHEMA_BASE + "anatomic-context-schema.json#",
        "AnatomicCodes": {"AnatomicRegion": regions},
    }


def terminology_tag(artery: ArteryLabel) -> str:
    """The segment's TerminologyEntry tag (Slicer's serialized form, built by Slicer's own function)."""
    import slicer

    category, kind, region = TERMINOLOGY["category"], TERMINOLOGY["type"], artery.anatomic_region
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT,
        category["CodeValue"], category["CodingSchemeDesignator"], category["CodeMeaning"],
        kind["CodeValue"], kind["CodingSchemeDesignator"], kind["CodeMeaning"],
        "", "", "",
        ANATOMIC_CONTEXT,
        region["CodeValue"], region["CodingSchemeDesignator"], region["CodeMeaning"],
        "", "", "",
    )  # fmt: skip


def load_terminology_files(terminologies_logic, folder: Path) -> None:
    """Register the checked-in files with Slicer's Terminologies logic, so that Slicer's terminology selector
    and exports resolve the codes our segments carry. Loading again replaces the same contexts."""
    loaded = (terminologies_logic.LoadTerminologyFromFile(str(folder / TERMINOLOGY_FILE)),
              terminologies_logic.LoadRegionContextFromFile(str(folder / ANATOMIC_FILE)))
    if loaded != (TERMINOLOGY_CONTEXT, ANATOMIC_CONTEXT):
        raise RuntimeError(f"Slicer did not load the CACScoring terminology from {folder} (got {loaded})")


def write_terminology_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in ((TERMINOLOGY_FILE, category_type_context()), (ANATOMIC_FILE, anatomic_context())):
        path = folder / name
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_terminology_files(Path(sys.argv[1])):
        print(written_path)
