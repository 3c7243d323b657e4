"""The real CACScoringWidget on a real MRML scene (slicer-core), with stand-ins for Qt and the .ui's widgets
(Testing/slicer_widget_stand_ins.py): what the user sees and what lands in which node."""

from __future__ import annotations

import sys

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
    with pytest.raises(RuntimeError, match=r"^CAC Scoring needs 3D Slicer 5\.10 or later"):
        sys.modules["CACScoring"].CACScoringLogic().process(None)  # a script gets the same line


def test_slicer_5_10_gets_the_panel(widget_factory, monkeypatch):
    monkeypatch.setattr("sys.version_info", (3, 12, 1))
    widget, ui, _ = widget_factory((5, 10))
    assert widget.ui is ui and widget.logic is not None
    assert ui.presetComboBox.items  # the library's presets were listed


RELEASED = [("setActiveEffect", None), ("uninstallKeyboardShortcuts",), ("removeViewObservations",)]


@pytest.fixture
def panel(widget_factory, monkeypatch):
    """The module panel on Slicer 5.10 / Python 3.12."""
    monkeypatch.setattr("sys.version_info", (3, 12, 1))
    return widget_factory((5, 10))


def test_the_segment_editor_is_released_on_exit_and_taken_back_on_enter(panel):
    widget, ui, _ = panel
    editor = ui.segmentEditorWidget
    widget.parent.isEntered = True
    editor.calls.clear()
    widget.enter()
    assert editor.calls == [("installKeyboardShortcuts",), ("updateWidgetFromMRML",)]
    editor.calls.clear()
    widget.exit()
    assert editor.calls == RELEASED  # the order of Slicer's SegmentEditor.py
    editor.calls.clear()
    widget.cleanup()
    assert RELEASED == [c for c in editor.calls if c[0] in {"setActiveEffect", "uninstallKeyboardShortcuts",
                                                           "removeViewObservations"}]


def test_closing_the_scene_releases_the_segment_editor(panel, slicer_scene):
    widget, ui, _ = panel
    widget.parent.isEntered = True
    editor = ui.segmentEditorWidget
    editor.calls.clear()
    slicer_scene.scene.Clear(0)
    assert editor.calls == [("setActiveEffect", None), ("setSegmentationNode", None), ("removeViewObservations",),
                            ("updateWidgetFromMRML",)]  # the last at the end of the close: the module is shown


def case(slicer_scene, name, calcium_yx, size=2):
    """A 3 x 8 x 8 CT (0.5 x 0.5 x 3 mm voxels, origin 0, axes LPS) with one calcium spot of 400 HU in slice 1."""
    import numpy as np
    from CACScoringSlicerLib.geometry import add_volume_node

    from CACScoringLib.volume import CTVolume

    array = np.zeros((3, 8, 8), np.float32)
    y, x = calcium_yx
    array[1, y : y + size, x : x + size] = 400.0
    return add_volume_node(slicer_scene.scene, CTVolume(array=array, spacing=(0.5, 0.5, 3.0)), name)


def lad_at(calcium_yx, size=2):
    import numpy as np

    labels = np.zeros((3, 8, 8), np.uint8)
    y, x = calcium_yx
    labels[1, y : y + size, x : x + size] = 2
    return labels


def select(widget, volume, segmentation, model="1"):
    p = widget._parameterNode
    p.inputVolume, p.outputSegmentation, p.model, p.device = volume, segmentation, model, "cpu"


def run_until_done(widget, timeout_s=60.0):
    import time

    deadline = time.monotonic() + timeout_s
    while widget._job is not None:
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.1)
        widget._pollTimer.fire()


def test_apply_locks_the_selectors_and_the_result_lands_on_the_nodes_it_started_on(panel, slicer_scene,
                                                                                   job_stand_ins):
    import numpy as np

    widget, ui, dialogs = panel
    core = widget.logic.core
    volume_a, volume_b = case(slicer_scene, "A", (2, 2)), case(slicer_scene, "B", (5, 5))
    segmentation_a = core.create_segmentation_node(volume_a)
    segmentation_b = core.create_segmentation_node(volume_b)
    select(widget, volume_a, segmentation_a)

    ui.applyButton.emit("clicked(bool)", False)
    assert widget._job is not None and widget._pollTimer.isActive()
    assert ui.applyButton.text == "Cancel" and ui.applyButton.enabled
    assert not ui.inputVolumeSelector.enabled and not ui.outputSegmentationSelector.enabled
    select(widget, volume_b, segmentation_b)  # e.g. from a script or the Data module while it runs
    run_until_done(widget)

    assert dialogs.errors == [] and ui.logTextEdit.lines[-1] == "Done."
    np.testing.assert_array_equal(core.labels_from_segmentation(segmentation_a, volume_a), lad_at((2, 2)))
    assert not core.labels_from_segmentation(segmentation_b, volume_b).any()
    p = widget._parameterNode
    assert (p.inputVolume.GetID(), p.outputSegmentation.GetID()) == (volume_a.GetID(), segmentation_a.GetID())
    assert ui.inputVolumeSelector.enabled and ui.outputSegmentationSelector.enabled
    assert ui.applyButton.text == "Apply"
    assert ui.summaryLabel.text.startswith("Risk: ")  # the scores of A's calcium are shown


def test_the_overwrite_question_is_asked_for_each_run(panel, slicer_scene, job_stand_ins):
    import numpy as np

    widget, ui, dialogs = panel
    core = widget.logic.core
    volume = case(slicer_scene, "A", (2, 2))
    edited = core.create_segmentation_node(volume)
    reader_labels = lad_at((5, 5))
    core.write_labels(edited, volume, reader_labels)  # a reader's segmentation
    select(widget, volume, edited)

    dialogs.answers = [True]
    widget.onApplyButton()
    run_until_done(widget)
    assert len(dialogs.questions) == 1 and "has reader edits" in dialogs.questions[0]
    np.testing.assert_array_equal(core.labels_from_segmentation(edited, volume), lad_at((2, 2)))  # overwritten

    core.write_labels(edited, volume, reader_labels)  # edited again: the earlier "yes" is not reused
    dialogs.answers = [False]
    widget.onApplyButton()
    run_until_done(widget)
    assert len(dialogs.questions) == 2
    np.testing.assert_array_equal(core.labels_from_segmentation(edited, volume), reader_labels)  # kept
    new = widget._parameterNode.outputSegmentation
    assert new.GetID() != edited.GetID()
    np.testing.assert_array_equal(core.labels_from_segmentation(new, volume), lad_at((2, 2)))


@pytest.mark.parametrize("how", ["button", "scene close", "module cleanup"])
def test_cancel_ends_the_job_and_unlocks_the_panel(panel, slicer_scene, job_stand_ins, how):
    import time

    widget, ui, dialogs = panel
    volume = case(slicer_scene, "A", (2, 2))
    select(widget, volume, None, model="30")
    widget.onApplyButton()
    job = widget._job
    while not (job.workdir / "runner.pid").is_file():
        time.sleep(0.05)
    if how == "button":
        ui.applyButton.emit("clicked(bool)", False)  # returns at once; the poll timer sees the tree end
        assert (ui.applyButton.text, ui.applyButton.enabled) == ("Cancelling...", False)
        assert not ui.inputVolumeSelector.enabled
        run_until_done(widget)
    elif how == "scene close":
        slicer_scene.scene.Clear(0)
    else:
        widget.cleanup()
    assert widget._job is None and not widget._pollTimer.isActive()
    assert job.poll().state == "cancelled" and not job.workdir.exists()
    assert ui.logTextEdit.lines[-1].startswith("Segmentation cancelled")
    assert ui.inputVolumeSelector.enabled and ui.applyButton.text == "Apply"
    assert dialogs.errors == []


@pytest.mark.parametrize("how", ["Slicer quits", "module cleanup"])
def test_the_session_process_stays_between_runs_and_ends_with_slicer(panel, slicer_scene, job_stand_ins, how):
    import slicer
    from CACScoringSlicerLib.inference_worker import WORKER
    from slicer_job_stand_ins import ended, running

    widget, ui, dialogs = panel
    sys.modules[type(widget).__module__].CACScoring(stand_ins.Parent())  # connects to Slicer's quit
    runs = []
    for name, spot in (("A", (2, 2)), ("B", (5, 4))):
        select(widget, case(slicer_scene, name, spot), None, model="0")
        widget.onApplyButton()
        run_until_done(widget)
        runs.append((WORKER.runner_pid, WORKER.process.pid))
    (runner, launcher), second = runs
    assert second == (runner, launcher) and running(runner) and running(launcher)  # one process, kept
    if how == "Slicer quits":
        slicer.app.emit("aboutToQuit()")
    else:
        widget.cleanup()
    assert ended(launcher) and ended(runner)
    assert dialogs.errors == []


def loaded_contexts(terminologies):
    import vtk

    terms, regions = vtk.vtkStringArray(), vtk.vtkStringArray()
    terminologies.GetLoadedTerminologyNames(terms)
    terminologies.GetLoadedRegionContextNames(regions)
    return {a.GetValue(i) for a in (terms, regions) for i in range(a.GetNumberOfValues())}


def test_the_terminology_is_loaded_at_startup_and_when_the_panel_opens(slicer_scene, monkeypatch):
    import slicer
    from CACScoringSlicerLib.terminology import ANATOMIC_CONTEXT, TERMINOLOGY_CONTEXT

    monkeypatch.setattr("sys.version_info", (3, 12, 1))
    module, _, _ = stand_ins.install(monkeypatch, slicer_scene.scene)
    terminologies = slicer.modules.terminologies.logic()
    module.CACScoring(stand_ins.Parent())
    assert loaded_contexts(terminologies) == set()
    slicer.app.emit("startupCompleted()")
    assert {TERMINOLOGY_CONTEXT, ANATOMIC_CONTEXT} <= loaded_contexts(terminologies)

    module, _, _ = stand_ins.install(monkeypatch, slicer_scene.scene)  # "Reload": a fresh Terminologies logic
    widget = module.CACScoringWidget()
    widget.setup()
    assert {TERMINOLOGY_CONTEXT, ANATOMIC_CONTEXT} <= loaded_contexts(slicer.modules.terminologies.logic())
    widget.cleanup()


def test_an_edit_during_the_run_is_kept_and_the_result_goes_to_a_new_segmentation(panel, slicer_scene,
                                                                                   job_stand_ins):
    import numpy as np

    widget, ui, dialogs = panel
    core = widget.logic.core
    volume = case(slicer_scene, "A", (2, 2))
    segmentation = core.create_segmentation_node(volume, "A calcium")
    select(widget, volume, segmentation)
    widget.onApplyButton()
    assert dialogs.questions == []  # nothing edited yet: nothing to ask
    stroke = lad_at((5, 5))
    core.write_labels(segmentation, volume, stroke)  # the reader paints while the CT is segmented
    run_until_done(widget)

    np.testing.assert_array_equal(core.labels_from_segmentation(segmentation, volume), stroke)
    result = widget._parameterNode.outputSegmentation
    assert result.GetID() != segmentation.GetID()
    np.testing.assert_array_equal(core.labels_from_segmentation(result, volume), lad_at((2, 2)))
    assert ui.logTextEdit.lines[-2] == f"'A calcium' has reader edits, so it is kept: the result is in " \
                                       f"'{result.GetName()}'."


def test_reassign_a_lesion_and_export_from_the_panel(panel, slicer_scene, job_stand_ins, tmp_path):
    import json

    widget, ui, dialogs = panel
    volume = case(slicer_scene, "A", (2, 2), size=4)  # 16 px of 0.25 mm² = 4 mm² at 400 HU: Agatston 4 x 4 = 16
    select(widget, volume, None)
    widget.onApplyButton()
    run_until_done(widget)
    scores = ui.scoreTableView.tableNode
    assert [scores.GetCellText(row, 0) for row in range(5)] == ["LM", "LAD", "LCX", "RCA", "Total"]
    assert float(scores.GetCellText(1, 2)) == 16.0 and float(scores.GetCellText(3, 2)) == 0.0
    assert not ui.reassignButton.enabled  # no lesion picked yet

    ui.lesionTableView.selectedRow = 0
    ui.lesionTableView.emit("clicked(QModelIndex)", ui.lesionTableView.currentIndex())
    # centroid (i, j, k) = (3.5, 3.5, 1) -> LPS (1.75, 1.75, 3) -> RAS (-1.75, -1.75, 3)
    assert ui.markups.jumps == [(-1.75, -1.75, 3.0)]
    assert ui.reassignButton.enabled
    ui.reassignComboBox.setCurrentText("RCA")
    ui.segmentEditorWidget.calls.clear()
    ui.reassignButton.emit("clicked(bool)", False)
    assert ui.segmentEditorWidget.calls == [("saveStateForUndo",)]  # undoable with the editor's Undo
    scores = ui.scoreTableView.tableNode
    assert float(scores.GetCellText(1, 2)) == 0.0 and float(scores.GetCellText(3, 2)) == 16.0

    assert not ui.exportButton.enabled  # no output folder yet
    widget._parameterNode.outputFolder = tmp_path / "report"
    assert ui.exportButton.enabled
    ui.exportButton.emit("clicked(bool)", False)
    assert dialogs.infos == [f"Report and segmentation written to {tmp_path / 'report'}"] and dialogs.errors == []
    exported = json.loads((tmp_path / "report" / "A_scores.json").read_text(encoding="utf-8"))
    assert exported["arteries"]["RCA"]["agatston"] == 16.0 and exported["total"]["agatston"] == 16.0
    assert (tmp_path / "report" / "A.seg.nrrd").is_file()


def test_reload_and_test_installs_the_requirements_first(slicer_scene, monkeypatch):
    import unittest

    monkeypatch.setattr("sys.version_info", (3, 12, 1))
    module, _, _ = stand_ins.install(monkeypatch, slicer_scene.scene)
    asked = []
    monkeypatch.setattr(module, "ensureRequirements", lambda: asked.append(True) and False)  # declined
    with pytest.raises(unittest.SkipTest, match="requirements are not installed"):
        module.CACScoringTest().runTest()
    assert asked == [True]

    module, _, _ = stand_ins.install(monkeypatch, slicer_scene.scene, version=(5, 8))
    with pytest.raises(unittest.SkipTest, match=r"^CAC Scoring needs 3D Slicer 5\.10 or later"):
        module.CACScoringTest().runTest()
