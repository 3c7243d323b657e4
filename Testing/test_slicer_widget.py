"""The real CACScoringWidget on a real MRML scene (slicer-core), with stand-ins for Qt and the .ui's widgets
(Testing/slicer_widget_stand_ins.py): what the user sees and what lands in which node."""

from __future__ import annotations

import pytest
import slicer_widget_stand_ins as stand_ins

pytestmark = pytest.mark.slicer


@pytest.fixture
def widget_factory(slicer_scene, monkeypatch):
    def make(version=(5, 10)):
        module, ui, dialogs = stand_ins.install(monkeypatch, slicer_scene.scene, version)
        widget = module.CACScoringWidget()
        widget.setup()
        return widget, ui, dialogs

    made = []
    yield lambda version=(5, 10): made.append(make(version)) or made[-1]
    for widget, _, _ in made:
        widget.cleanup()


@pytest.mark.parametrize("version", [(5, 8), (5, 6)])
def test_an_older_slicer_gets_one_line_in_the_panel_instead_of_the_module(widget_factory, version):
    widget, ui, dialogs = widget_factory(version)
    (label,) = widget.layout.widgets
    major, minor = version
    assert label.text.startswith("CAC Scoring needs 3D Slicer 5.10 or later (Python 3.12); "
                                 f"this is Slicer {major}.{minor}")
    assert "\n" not in label.text
    assert widget.logic is None and not hasattr(widget, "ui")
    widget.enter()
    widget.exit()  # entering and leaving the module does not fail either
    assert dialogs.errors == []


def test_slicer_5_10_gets_the_panel(widget_factory, monkeypatch):
    monkeypatch.setattr("sys.version_info", (3, 12, 1))
    widget, ui, _ = widget_factory((5, 10))
    assert widget.ui is ui and widget.logic is not None
    assert ui.presetComboBox.items  # the library's presets were listed
