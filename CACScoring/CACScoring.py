"""CACScoring: coronary artery calcium scoring with live per-artery scores while the reader edits.

Module / Widget / Logic / Test as in Slicer's scripted module template. The Widget only wires the .ui to
the Logic; the MRML work lives in CACScoringSlicerLib (GUI-free, tested with slicer-core).
"""

import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _addLibraryPath() -> None:
    """Find CACScoringLib: beside this file in a built extension, at the repository root in a source tree."""
    moduleDir = Path(__file__).resolve().parent
    for candidate in (moduleDir, moduleDir.parent):
        if (candidate / "CACScoringLib" / "__init__.py").is_file():
            if str(candidate) not in sys.path:
                sys.path.insert(0, str(candidate))
            return


_addLibraryPath()

RESCORE_DELAY_MS = 20  # a stroke fires several events: rescore once after the last (rescore itself < 80 ms)
POLL_INTERVAL_MS = 200
DELETE_CHOICE = "Delete"


class CACScoring(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CAC Scoring"
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = ["Segmentations", "Markups"]
        self.parent.contributors = ["CACScoring contributors"]
        self.parent.helpText = (
            "Coronary artery calcium scoring on non-contrast cardiac CT: a MONAI model segments calcium per "
            "artery (LM, LAD, LCX, RCA); correct the segments in the embedded Segment Editor and the Agatston, "
            "volume and mass scores follow every stroke. Research software, not for clinical decisions."
        )
        self.parent.acknowledgementText = "Built on 3D Slicer, MONAI and SimpleITK."
        slicer.app.connect("startupCompleted()", loadTerminology)
        slicer.app.connect("aboutToQuit()", shutdownInferenceWorker)


def shutdownInferenceWorker() -> None:
    """End this session's segmentation process (Slicer's exit, the module's cleanup); the next Apply starts one."""
    worker = sys.modules.get("CACScoringSlicerLib.inference_worker")  # not imported: none was started
    if worker is not None:
        worker.shutdown()


def loadTerminology() -> None:
    """Slicer's Terminologies module learns our segments' codes (Resources/*.json)."""
    if unsupportedSlicer():
        return
    from CACScoringSlicerLib.terminology import load_terminology_files

    load_terminology_files(slicer.modules.terminologies.logic(), Path(__file__).resolve().parent / "Resources")


@parameterNodeWrapper
class CACScoringParameterNode:
    """Saved with the scene: reopening it restores the session (same reference names the Logic reads)."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    model: str = ""
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    preset: str = "standard"
    outputFolder: Path
    scoreTable: vtkMRMLTableNode
    lesionTable: vtkMRMLTableNode


def requirementsFile() -> Path:
    from CACScoringLib.resources import resources_dir

    return resources_dir() / "requirements.txt"


def unmetRequirements() -> list[str]:
    """What is missing or too old, one line each (quick: reads package metadata, imports nothing heavy)."""
    from CACScoringSlicerLib.dependencies import describe_unmet

    return describe_unmet(requirementsFile())


def installTorch(versionSpecifier: str):
    import PyTorchUtils

    return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                         torchVersionRequirement=versionSpecifier)


def ensureRequirements() -> bool:
    """Install what is missing after asking: torch through PyTorchUtils (never replaced by pip), the rest from
    requirements.txt. Returns False when the user declined or an install failed (after saying why)."""
    import importlib.util

    from CACScoringSlicerLib.dependencies import Installer, ensure_requirements

    installer = Installer(
        confirm=lambda text: slicer.util.confirmOkCancelDisplay(
            text, windowTitle="CAC Scoring: install requirements"),
        show_error=slicer.util.errorDisplay,
        pip_install=slicer.util.pip_install,
        install_torch=installTorch if importlib.util.find_spec("PyTorchUtils") else None,
    )
    return ensure_requirements(requirementsFile(), installer)


def unsupportedSlicer():
    """Why this Slicer cannot run the module (one line), or None. Checked before anything needs Python 3.12."""
    from CACScoringSlicerLib.compatibility import unsupported_reason

    return unsupported_reason((slicer.app.majorVersion, slicer.app.minorVersion), sys.version_info)


class CACScoringWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._session = None  # (volume ID, segmentation ID, preset) being scored live

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        unsupported = unsupportedSlicer()
        if unsupported:
            self.layout.addWidget(qt.QLabel(unsupported))
            self.layout.addStretch(1)
            return
        loadTerminology()  # also when the module is reloaded after startup
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CACScoring.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CACScoringLogic()

        self._rescoreTimer = qt.QTimer()
        self._rescoreTimer.setSingleShot(True)
        self._rescoreTimer.setInterval(RESCORE_DELAY_MS)
        self._rescoreTimer.connect("timeout()", self.onRescoreTimer)
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollTimer)

        from CACScoringLib.labels import ARTERIES

        self.ui.reassignComboBox.addItems([*ARTERIES, DELETE_CHOICE])
        self._choicesFilled = False
        self._fillChoices()
        self.ui.modelComboBox.connect("currentTextChanged(QString)", self.onModelChanged)
        self.ui.presetComboBox.connect("currentTextChanged(QString)", self.onPresetChanged)
        self.ui.segmentEditorWidget.setMaximumNumberOfUndoStates(10)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.calciumMaskButton.connect("clicked(bool)", self.onCalciumMaskButton)
        self.ui.lesionTableView.connect("clicked(QModelIndex)", self.onLesionClicked)
        self.ui.reassignButton.connect("clicked(bool)", self.onReassignButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.initializeParameterNode()

    def _fillChoices(self) -> bool:
        """Model and preset lists come from CACScoringLib, so only once its requirements are installed."""
        if self._choicesFilled or unmetRequirements():
            return self._choicesFilled
        from CACScoringLib.models.registry import Registry
        from CACScoringLib.scoring import PRESETS

        self.ui.modelComboBox.clear()
        self.ui.modelComboBox.addItem("")  # empty: the registry's default model
        self.ui.modelComboBox.addItems(Registry.load().ids)
        self.ui.presetComboBox.clear()
        self.ui.presetComboBox.addItems(list(PRESETS))
        self._choicesFilled = True
        self._updateGUIFromParameterNode()
        return True

    def _ready(self) -> bool:
        return ensureRequirements() and self._fillChoices()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic is None:
            return
        self._endJob("cancelled: the module was closed")
        shutdownInferenceWorker()
        self._releaseEditor()
        self._rescoreTimer.stop()
        if self.logic.hasCore:
            self.logic.core.stop_live_scoring()

    def enter(self) -> None:
        if self.logic is None:
            return
        self.initializeParameterNode()
        # as Slicer's Segment Editor module: its shortcuts and view observations only while the module is shown
        self.ui.segmentEditorWidget.installKeyboardShortcuts()
        self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def _releaseEditor(self) -> None:
        """No effect (Paint, Erase...) stays live in the slice views once the panel is gone."""
        editor = self.ui.segmentEditorWidget
        editor.setActiveEffect(None)
        editor.uninstallKeyboardShortcuts()
        editor.removeViewObservations()

    def exit(self) -> None:
        if self.logic is not None:
            self._releaseEditor()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self._endJob("cancelled: the scene was closed")
        self._rescoreTimer.stop()
        if self.logic.hasCore:
            self.logic.core.stop_live_scoring()
        self._session = None
        self.setParameterNode(None)
        editor = self.ui.segmentEditorWidget
        editor.setActiveEffect(None)
        editor.setSegmentationNode(None)
        editor.removeViewObservations()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.ui.segmentEditorWidget.updateWidgetFromMRML()

    def onSceneEndImport(self, caller, event) -> None:
        """A loaded scene with a CACScoring session resumes live scoring (after installing what is missing)."""
        self.initializeParameterNode()
        if self._parameterNode.inputVolume and self._parameterNode.outputSegmentation and self._ready():
            self._followSelection()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIFromParameterNode)
            self._updateGUIFromParameterNode()

    def onModelChanged(self, text) -> None:
        if self._parameterNode and self._choicesFilled:
            self._parameterNode.model = text

    def onPresetChanged(self, text) -> None:
        if self._parameterNode and self._choicesFilled and text:
            self._parameterNode.preset = text

    def _updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        if self._parameterNode and self._choicesFilled:
            self.ui.modelComboBox.setCurrentText(self._parameterNode.model)
            self.ui.presetComboBox.setCurrentText(self._parameterNode.preset)
            self._followSelection()
        self._updateButtons()

    def _followSelection(self) -> None:
        """Score the selected CT and segmentation (e.g. one loaded from a file, or a restored scene) live."""
        p = self._parameterNode
        if self._job is not None or not (p.inputVolume and p.outputSegmentation):
            return
        session = (p.inputVolume.GetID(), p.outputSegmentation.GetID(), p.preset)
        if session == self._session:
            return
        self._session = session
        if self._run(lambda: self.logic.core.start_live_scoring(p.inputVolume, p.outputSegmentation,
                                                                self._scoringParams())) is not None:
            self._showSession()

    def _updateButtons(self) -> None:
        running = self._job is not None
        cancelling = running and self._job.cancel_requested
        for selector in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector):
            selector.enabled = not running  # the job writes to the nodes it started on
        self.ui.applyButton.text = "Cancelling..." if cancelling else "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = (running and not cancelling) or (
            not running and bool(self._parameterNode and self._parameterNode.inputVolume))
        scoring = self.logic.hasCore and self.logic.core.result is not None
        folder = str(self._parameterNode.outputFolder) if self._parameterNode else ""
        self.ui.exportButton.enabled = scoring and folder not in ("", ".")
        self.ui.reassignButton.enabled = scoring and self.ui.lesionTableView.currentIndex().isValid()

    def _scoringParams(self):
        from CACScoringLib.scoring import preset

        return preset(self._parameterNode.preset)

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def _run(self, action):
        """Run a Logic call; a user-fixable problem is shown as a message, not a traceback."""
        from CACScoringLib.errors import InputError

        try:
            return action()
        except InputError as error:
            slicer.util.errorDisplay(str(error))
            return None

    # --- Apply / Cancel: inference in a background process, polled by a timer ---

    def onApplyButton(self) -> None:
        if self._job is not None:
            self._job.cancel(wait=False)  # the poll timer sees the process tree end: the panel stays responsive
            self._updateButtons()
            return
        if not self._ready():
            return
        from CACScoringSlicerLib.logic import ScoringOptions

        core = self.logic.core
        volumeNode, segmentationNode = self._parameterNode.inputVolume, self._parameterNode.outputSegmentation
        overwrite = False  # asked for this run only
        if segmentationNode is not None and volumeNode is not None and core.is_edited(segmentationNode, volumeNode):
            overwrite = slicer.util.confirmYesNoDisplay(
                f"'{segmentationNode.GetName()}' has reader edits. Overwrite them?\n\n"
                "No: the new result goes to a new segmentation and the edited one is kept."
            )
        options = ScoringOptions(model=self._parameterNode.model, device=self._parameterNode.device,
                                 preset=self._parameterNode.preset, overwrite_edited=overwrite)
        self._job = self._run(lambda: core.start_inference(volumeNode, segmentationNode, options))
        if self._job is None:
            return
        self.ui.progressBar.value = 0
        self._log(f"Segmenting '{volumeNode.GetName()}' ...")
        self._pollTimer.start()
        self._updateButtons()

    def _endJob(self, reason: str) -> None:
        """Cancel the running job (button, scene close, module cleanup): its whole process tree ends and its
        temporary folder is removed."""
        self._pollTimer.stop()
        job, self._job = self._job, None
        if job is not None:
            job.close()
            self._log(f"Segmentation {reason}.")
        self._updateButtons()

    def onPollTimer(self) -> None:
        status = self._job.poll()
        for line in status.log:
            self._log(line)
        self.ui.progressBar.value = int(round(100 * status.progress))
        if status.state == "running":
            return
        self._pollTimer.stop()
        job, self._job = self._job, None
        if status.state == "done":
            node = self._run(lambda: self.logic.core.finish_inference(job))
            if node is not None:
                kept = slicer.mrmlScene.GetNodeByID(job.segmentation_id) if job.segmentation_id else None
                if kept is not None and kept is not node:
                    self._log(f"'{kept.GetName()}' has reader edits, so it is kept: the result is in "
                              f"'{node.GetName()}'.")
                # the scored nodes are the ones the job ran on, whatever was selected meanwhile
                self._session = (job.volume_id, node.GetID(), job.options.preset)
                self._parameterNode.inputVolume = self.logic.core.volume_node
                self._parameterNode.outputSegmentation = node
                self._showSession()
                self._log("Done.")
        else:
            job.cleanup()
            self._log("Segmentation cancelled." if status.state == "cancelled"
                      else f"Segmentation {status.state}: {status.message}")
            if status.state == "failed":
                slicer.util.errorDisplay(f"Segmentation failed: {status.message}")
        self._updateButtons()

    # --- live scores ---

    def _showSession(self) -> None:
        """Point the editor and the tables at the scored nodes, and follow edits."""
        core = self.logic.core
        if core.result is None:
            return
        core.on_segmentation_changed = self._rescoreTimer.start
        editorNode = core.segment_editor_node()
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(editorNode)
        self.ui.segmentEditorWidget.setSegmentationNode(core.segmentation_node)
        self.ui.segmentEditorWidget.setSourceVolumeNode(core.volume_node)
        parameterNode = core.parameter_node()
        self.ui.scoreTableView.setMRMLTableNode(parameterNode.GetNodeReference("scoreTable"))
        self.ui.lesionTableView.setMRMLTableNode(parameterNode.GetNodeReference("lesionTable"))
        threshold = core.result.effective_threshold_hu
        self.ui.calciumMaskButton.text = f"Paint only calcium (≥ {threshold:g} HU)"
        self._showScores()

    def _showScores(self) -> None:
        core = self.logic.core
        self.ui.summaryLabel.text = core.summary()
        self.ui.warningsLabel.text = "\n".join(f"⚠ {w}" for w in core.warnings())
        self._updateButtons()

    def onRescoreTimer(self) -> None:
        if self._run(self.logic.core.rescore) is not None:
            self._showScores()

    def onCalciumMaskButton(self) -> None:
        if not self._ready():
            return
        core = self.logic.core
        threshold = core.result.effective_threshold_hu if core.result else self._scoringParams().threshold_hu
        core.apply_calcium_mask_preset(core.segment_editor_node(), threshold)

    # --- lesions ---

    def _selectedLesionId(self):
        index = self.ui.lesionTableView.currentIndex()
        lesions = self.logic.core.result.lesions
        return lesions[index.row()].id if index.isValid() and index.row() < len(lesions) else None

    def onLesionClicked(self, index) -> None:
        lesionId = self._selectedLesionId()
        if lesionId is not None:
            x, y, z = self.logic.core.lesion_center_ras(lesionId)
            slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)
        self._updateButtons()

    def onReassignButton(self) -> None:
        lesionId = self._selectedLesionId()
        if lesionId is None:
            return
        choice = self.ui.reassignComboBox.currentText
        target = None if choice == DELETE_CHOICE else choice
        # the Segment Editor's history makes the change undoable with its Undo button
        if self._run(lambda: self.logic.core.reassign_lesion(
                lesionId, target, self.ui.segmentEditorWidget.saveStateForUndo)) is not None:
            self._showScores()

    # --- export ---

    def onExportButton(self) -> None:
        paths = self._run(lambda: self.logic.core.export(self._parameterNode.outputFolder))
        if paths is not None:
            self._log("Exported:\n" + "\n".join(str(p) for p in paths.values()))
            slicer.util.infoDisplay(f"Report and segmentation written to {self._parameterNode.outputFolder}")


class CACScoringLogic(ScriptedLoadableModuleLogic):
    """For scripts: `slicer.util.getModuleLogic("CACScoring").process(volumeNode)`.

    `core` is the GUI-free CACScoringSlicerLib.logic.CACScoringSceneLogic on slicer.mrmlScene; it is made on
    first use so the module loads before its Python requirements are installed.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._core = None

    def getParameterNode(self):
        return CACScoringParameterNode(super().getParameterNode())

    @property
    def hasCore(self) -> bool:
        return self._core is not None

    @property
    def core(self):
        if self._core is None:
            unsupported = unsupportedSlicer()
            if unsupported:  # scripts on an older Slicer get the panel's one line, not an import error
                raise RuntimeError(unsupported)
            from CACScoringSlicerLib.logic import CACScoringSceneLogic

            self._core = CACScoringSceneLogic(slicer.mrmlScene)
        return self._core

    def process(self, inputVolumeNode, outputSegmentationNode=None, options=None, progress=None):
        """Segment and score one CT volume node; returns (segmentation node, ScoreResult)."""
        return self.core.process(inputVolumeNode, outputSegmentationNode, options, progress)


class CACScoringTest(ScriptedLoadableModuleTest):
    """The scenario of Testing/test_slicer_logic.py inside Slicer: phantom -> segments -> edit -> live
    scores equal a full recompute; .seg.nrrd round trip; reader edits survive a second inference."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        unsupported = unsupportedSlicer()
        if unsupported:
            self.skipTest(unsupported)
        if not ensureRequirements():  # the test builds phantoms (scikit-image) and reads DICOM (pydicom)
            self.skipTest("CAC Scoring's Python requirements are not installed")
        self.setUp()
        self.test_LiveScoringFollowsEdits()

    def test_LiveScoringFollowsEdits(self):
        import tempfile

        import numpy as np
        import SimpleITK as sitk
        from CACScoringSlicerLib.geometry import oriented_image

        from CACScoringLib.labels import LABEL_ID
        from CACScoringLib.phantom import make_thorax_phantom
        from CACScoringLib.scoring import score_volume

        self.delayDisplay("Loading a phantom CT")
        phantom = make_thorax_phantom(seed=1, shape=(16, 128, 128))
        folder = Path(tempfile.mkdtemp())
        sitk.WriteImage(phantom.ct.to_sitk(), str(folder / "phantom.nii.gz"))
        volumeNode = slicer.util.loadVolume(str(folder / "phantom.nii.gz"))
        core = CACScoringLogic().core

        segmentationNode = core.apply_inference_labels(volumeNode, phantom.labels)
        core.start_live_scoring(volumeNode, segmentationNode)
        self.assertEqual(core.result.to_dict()["arteries"], score_volume(core.ct, phantom.labels).to_dict()["arteries"])

        self.delayDisplay("Painting one slice as the Segment Editor does")
        z = phantom.labels.shape[0] // 2
        stroke = np.zeros(phantom.labels.shape, np.uint8)
        stroke[z, 60:66, 60:66] = 1
        extent = (0, stroke.shape[2] - 1, 0, stroke.shape[1] - 1, z, z)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            oriented_image(stroke, volumeNode), segmentationNode, "RCA",
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MASK, extent)
        self.assertTrue(core.stale)
        expected = phantom.labels.copy()
        expected[stroke > 0] = LABEL_ID["RCA"]
        live = core.rescore()
        self.assertEqual(live.to_dict(), score_volume(core.ct, expected).to_dict())

        self.delayDisplay("Saving and reloading the segmentation")
        reloaded = core.load_segmentation(core.save_segmentation(segmentationNode, folder / "case.seg.nrrd"))
        self.assertEqual(core.start_live_scoring(volumeNode, reloaded).to_dict(), live.to_dict())

        self.delayDisplay("A second inference run keeps the reader's edits")
        second = core.apply_inference_labels(volumeNode, phantom.labels, segmentationNode)
        self.assertNotEqual(second.GetID(), segmentationNode.GetID())
        np.testing.assert_array_equal(core.labels_from_segmentation(segmentationNode, volumeNode), expected)
        self.delayDisplay("Test passed")
