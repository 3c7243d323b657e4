"""Static checks of the Slicer module that need no Slicer: .ui validity and its agreement with the Widget."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import defusedxml.ElementTree as ET
import pytest

MODULE_DIR = Path(__file__).resolve().parent.parent / "CACScoring"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CACScoring.ui"
MODULE_FILE = MODULE_DIR / "CACScoring.py"


@pytest.fixture(scope="module")
def ui_tree():
    return ET.parse(UI_FILE).getroot()


def widget_names(root) -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def test_ui_is_a_qt_designer_form_for_a_mrml_widget(ui_tree):
    assert ui_tree.tag == "ui" and ui_tree.get("version") == "4.0"
    top = ui_tree.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == ui_tree.findtext("class")
    declared = {c.findtext("class") for c in ui_tree.iter("customwidget")}
    used = set(widget_names(ui_tree).values())
    qt_classes = {c for c in used if c.startswith("Q")}
    assert used - qt_classes <= declared, "every Slicer/CTK widget class must be declared as a custom widget"
    names = [w.get("name") for w in ui_tree.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"


def test_every_widget_the_module_uses_exists_in_the_ui(ui_tree):
    source = MODULE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", source))
    assert used, "the Widget should use widgets from the .ui"
    assert used <= set(widget_names(ui_tree)), f"missing in the .ui: {sorted(used - set(widget_names(ui_tree)))}"


def test_mrml_widgets_get_the_scene_through_the_form(ui_tree):
    mrml_widgets = {n for n, c in widget_names(ui_tree).items() if c.startswith("qMRML") and c != "qMRMLWidget"}
    connected = {c.findtext("receiver") for c in ui_tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert mrml_widgets == connected


def test_parameter_bindings_name_parameters_of_the_parameter_node(ui_tree):
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CACScoringParameterNode")
    parameters = {s.target.id for s in wrapper.body if isinstance(s, ast.AnnAssign)}
    bound = {p.findtext("string") for p in ui_tree.iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound and bound <= parameters
    # the GUI-free logic reads the same references back from a saved scene
    logic_source = (MODULE_DIR / "CACScoringSlicerLib" / "logic.py").read_text(encoding="utf-8")
    for role in re.findall(r'(?:GetNodeReference|SetNodeReferenceID|_table_node)\("(\w+)"', logic_source):
        assert role in parameters, role


def test_module_file_has_module_widget_logic_and_test_classes():
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes["CACScoring"] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in classes["CACScoringWidget"]
    assert classes["CACScoringLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["CACScoringTest"] == ["ScriptedLoadableModuleTest"]
    assert '"UI/CACScoring.ui"' in MODULE_FILE.read_text(encoding="utf-8")


def test_cmake_lists_every_module_file_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s+((?:CACScoringSlicerLib|Resources)/[\w./${}-]+)", cmake, re.MULTILINE))
    listed = {entry.replace("${MODULE_NAME}", "CACScoring") for entry in listed}
    package_files = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "CACScoringSlicerLib").glob("*.py")}
    assert package_files <= listed, f"not in CMakeLists SCRIPTS: {sorted(package_files - listed)}"
    resources = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert resources <= listed, f"not in CMakeLists RESOURCES: {sorted(resources - listed)}"
    assert all((MODULE_DIR / entry).is_file() for entry in listed), "CMakeLists names a file that does not exist"


def test_extension_declares_its_pytorch_dependency_consistently():
    import json

    top = (MODULE_DIR.parent / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf"set\(EXTENSION_{variable} ", top), variable
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in top and "add_subdirectory(CACScoring)" in top
    entry = json.loads((MODULE_DIR.parent / "CACScoring.json").read_text(encoding="utf-8"))
    assert entry["build_dependencies"] == ["PyTorch"]
    assert re.search(r'set\(EXTENSION_CATEGORY "(\w+)"\)', top).group(1) == entry["category"]
