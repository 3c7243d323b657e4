"""Every Slicer API the module uses exists in Slicer 5.10: the module's sources name nothing that is not in
Testing/slicer_5_10_api.txt (each entry checked against Slicer's v5.10.0 sources), and slicer-core has every
listed member of the classes it wraps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API_LIST = Path(__file__).with_name("slicer_5_10_api.txt")
SOURCES = [ROOT / "CACScoring" / "CACScoring.py", *sorted((ROOT / "CACScoring" / "CACScoringSlicerLib").glob("*.py"))]
# Capitalized calls that are not Slicer's: VTK core, the standard library, SimpleITK, Qt, PyTorchUtils' logic class.
NOT_SLICER = {
    "AddColumn", "InsertNextValue", "GetElement", "SetElement", "GetDimensions", "SetDimensions", "GetExtent",
    "SetExtent", "GetPointData", "GetScalars", "SetScalars", "GetNumberOfScalarComponents", "GetNumberOfComponents",
    "GetDataType", "AddObserver",
    "RemoveObserver", "ArgumentParser", "Event", "Lock", "Popen", "Process", "Queue", "TemporaryDirectory",
    "Thread", "STARTUPINFO", "ReadImage", "WriteImage", "GetArrayFromImage", "QLabel", "QTimer", "PyTorchUtilsLogic",
}  # fmt: skip
QT_MEMBERS = {"connect", "currentIndex"}  # QObject, QAbstractItemView
SCENE_ALIASES = {"slicer.mrmlScene": "vtkMRMLScene"}


def listed() -> set[str]:
    lines = API_LIST.read_text(encoding="utf-8").splitlines()
    return {line.split("\t")[0] for line in lines if line.strip() and not line.startswith("#")}


def source_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in SOURCES)


def test_every_slicer_name_the_module_uses_is_listed():
    names = listed()
    prefixes = {name.rsplit(".", depth)[0] for name in names for depth in (1, 2) if name.count(".") >= depth}
    unlisted = []
    text = source_text()
    chains = set(re.findall(r"(?<![\w.])slicer\.([A-Za-z_][\w.]*\w)", text))
    imports = re.findall(r"^from slicer(\.\w+)? import (?:\(([^)]*)\)|([\w, ]+)$)", text, re.MULTILINE)
    for module, in_parentheses, on_the_line in imports:
        imported = [name.strip() for name in (in_parentheses or on_the_line).split(",") if name.strip()]
        chains |= {f"{module.removeprefix('.')}.{name}" if module else name for name in imported}
    for chain in chains:
        chain = "slicer." + chain.removesuffix(".connect")  # Qt's connect: the signal is listed
        for alias, cls in SCENE_ALIASES.items():
            if chain == alias or chain.startswith(alias + "."):
                chain = cls + chain[len(alias):]
        if chain.startswith("slicer.vtk"):
            chain = chain.removeprefix("slicer.")
        if chain not in names and chain not in prefixes:
            unlisted.append(chain)
    assert unlisted == [], f"not in {API_LIST.name}: {sorted(unlisted)}"


def test_every_vtk_style_call_is_a_listed_slicer_member_or_not_slicers():
    members = {name.rsplit(".", 1)[1] for name in listed() if "." in name}
    called = set(re.findall(r"\.([A-Z]\w+)\(", source_text()))
    assert called - members - NOT_SLICER == set()


def test_every_qmrml_widget_call_is_listed():
    names = listed()
    text = (ROOT / "CACScoring" / "CACScoring.py").read_text(encoding="utf-8")
    editor = {f"qMRMLSegmentEditorWidget.{m}" for m in re.findall(r"(?:editor|segmentEditorWidget)\.(\w+)\(", text)}
    tables = {f"qMRMLTableView.{m}" for m in re.findall(r"TableView\.(\w+)\(", text) if m not in QT_MEMBERS}
    assert editor and tables and (editor | tables) - names == set()


def test_the_widget_stand_in_offers_only_listed_segment_editor_methods():
    import slicer_widget_stand_ins

    listed_editor = {n.split(".")[1] for n in listed() if n.startswith("qMRMLSegmentEditorWidget.")}
    assert slicer_widget_stand_ins.SEGMENT_EDITOR_METHODS <= listed_editor


@pytest.mark.slicer
def test_slicer_core_has_every_listed_member_of_the_classes_it_wraps():
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    checked = 0
    for name in sorted(listed()):
        cls, _, member = name.partition(".")
        if not (cls.startswith("vtk") and hasattr(slicer, cls)):
            continue
        assert not member or hasattr(getattr(slicer, cls), member), name
        checked += 1
    assert checked >= 60
