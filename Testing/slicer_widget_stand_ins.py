"""Stand-ins for the parts of the Slicer application that slicer-core lacks (Qt, the scripted-module base
classes, parameterNodeWrapper, the .ui's widgets), so the real CACScoringWidget runs against a real MRML scene.

Each stand-in records what the Widget did to it, so tests assert what the user would see. Only the members the
Widget uses exist: a Widget change that needs another fails here first.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import unittest
from pathlib import Path
from typing import get_type_hints

MODULE_DIR = Path(__file__).resolve().parent.parent / "CACScoring"


class Signals:
    """Qt's `connect(signature, slot)`; tests `emit` a signal by its signature. As PythonQt, a slot gets only
    as many of the signal's arguments as it takes (`clicked(bool)` may call a slot without parameters)."""

    def __init__(self):
        self.slots: dict[str, list] = {}

    def connect(self, signal: str, slot) -> None:
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal: str, *args) -> None:
        for slot in self.slots.get(signal, []):
            parameters = inspect.signature(slot).parameters.values()
            if not any(p.kind is p.VAR_POSITIONAL for p in parameters):
                args = args[: len(parameters)]
            slot(*args)


class QTimer(Signals):
    def __init__(self):
        super().__init__()
        self.active = False
        self.interval = 0
        self.singleShot = False

    def setSingleShot(self, single: bool) -> None:
        self.singleShot = single

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active

    def fire(self) -> None:
        """What the event loop does when the interval has passed."""
        if self.singleShot:
            self.active = False
        self.emit("timeout()")


class QLabel:
    def __init__(self, text: str = ""):
        self.text = text


class Layout:
    def __init__(self):
        self.widgets = []

    def addWidget(self, widget) -> None:
        self.widgets.append(widget)

    def addStretch(self, stretch: int) -> None:
        pass


def qt_module() -> types.ModuleType:
    module = types.ModuleType("qt")
    module.QTimer, module.QLabel = QTimer, QLabel
    return module


class Parent:
    def __init__(self):
        self.isEntered = False


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent or Parent()
        self.layout = Layout()

    def setup(self) -> None:
        pass

    @staticmethod
    def resourcePath(name: str) -> str:
        return str(MODULE_DIR / "Resources" / name)


class ScriptedLoadableModuleLogic:
    """As Slicer's: the parameter node is the scene's scripted-module singleton tagged with the module name."""

    moduleName = "CACScoring"

    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str) -> None:
        pass


def scripted_loadable_module() -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    return module


def parameter_node_wrapper() -> types.ModuleType:
    """Node-typed fields are node references, others string parameters (as Slicer's wrapper stores them)."""

    def parameterNodeWrapper(cls):
        hints = get_type_hints(cls)

        def make_property(name, kind):
            is_node = isinstance(kind, type) and kind.__name__.startswith("vtkMRML")
            default = getattr(cls, name, "")

            def get(self):
                if is_node:
                    return self.node.GetNodeReference(name)
                value = self.node.GetParameter(name)
                value = default if value == "" and default != "" else value
                return Path(value) if kind is Path else value

            def set_(self, value):
                if is_node:
                    self.node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                else:
                    self.node.SetParameter(name, str(value))

            return property(get, set_)

        namespace = {name: make_property(name, getattr(kind, "__origin__", kind)) for name, kind in hints.items()}

        def __init__(self, node):
            self.node = node
            self.connected = set()

        def connectGui(self, ui):
            tag = object()
            self.connected.add(tag)
            return tag

        def disconnectGui(self, tag):
            self.connected.discard(tag)

        def AddObserver(self, event, method, priority=0.0):  # as the real wrapper: observe the node
            return self.node.AddObserver(event, method, priority)

        def RemoveObserver(self, tag):
            self.node.RemoveObserver(tag)

        namespace.update(__init__=__init__, connectGui=connectGui, disconnectGui=disconnectGui,
                         AddObserver=AddObserver, RemoveObserver=RemoveObserver)
        return type(cls.__name__, (), namespace)

    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.parameterNodeWrapper = parameterNodeWrapper
    module.Choice = lambda choices: choices
    return module


# --- the .ui's widgets ---


class Widget(Signals):
    def __init__(self):
        super().__init__()
        self.enabled = True
        self.text = ""


class ComboBox(Widget):
    def __init__(self):
        super().__init__()
        self.items: list[str] = []
        self.currentText = ""

    def addItem(self, item: str) -> None:
        self.items.append(item)

    def addItems(self, items) -> None:
        self.items.extend(items)

    def clear(self) -> None:
        self.items = []

    def setCurrentText(self, text: str) -> None:
        self.currentText = text


class NodeSelector(Widget):
    pass


class ProgressBar(Widget):
    value = 0


class LogTextEdit(Widget):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def appendPlainText(self, text: str) -> None:
        self.lines.append(text)


class Index:
    def __init__(self, row: int | None):
        self._row = row

    def isValid(self) -> bool:
        return self._row is not None

    def row(self) -> int:
        return self._row


class TableView(Widget):
    def __init__(self):
        super().__init__()
        self.tableNode = None
        self.selectedRow = None

    def setMRMLTableNode(self, node) -> None:
        self.tableNode = node

    def currentIndex(self) -> Index:
        return Index(self.selectedRow)


class SegmentEditorWidget(Widget):
    """Records the calls of Slicer's qMRMLSegmentEditorWidget that the module makes, in order."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        if name not in SEGMENT_EDITOR_METHODS:
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, *args))


SEGMENT_EDITOR_METHODS = {
    "setMaximumNumberOfUndoStates", "setMRMLSegmentEditorNode", "setSegmentationNode", "setSourceVolumeNode",
    "saveStateForUndo", "setActiveEffect", "installKeyboardShortcuts", "uninstallKeyboardShortcuts",
    "removeViewObservations", "updateWidgetFromMRML",
}


class Ui:
    def __init__(self):
        self.inputVolumeSelector = NodeSelector()
        self.outputSegmentationSelector = NodeSelector()
        self.modelComboBox = ComboBox()
        self.deviceComboBox = ComboBox()
        self.presetComboBox = ComboBox()
        self.reassignComboBox = ComboBox()
        self.applyButton = Widget()
        self.calciumMaskButton = Widget()
        self.reassignButton = Widget()
        self.exportButton = Widget()
        self.progressBar = ProgressBar()
        self.logTextEdit = LogTextEdit()
        self.summaryLabel = Widget()
        self.warningsLabel = Widget()
        self.scoreTableView = TableView()
        self.lesionTableView = TableView()
        self.segmentEditorWidget = SegmentEditorWidget()
        self.outputFolderPathEdit = Widget()


class UiWidget:
    def setMRMLScene(self, scene) -> None:
        self.scene = scene


class Dialogs:
    """slicer.util's message boxes: records the messages, answers questions from a queue."""

    def __init__(self):
        self.errors: list[str] = []
        self.infos: list[str] = []
        self.questions: list[str] = []
        self.answers: list[bool] = []

    def error(self, text, *args, **kwargs) -> None:
        self.errors.append(text)

    def info(self, text, *args, **kwargs) -> None:
        self.infos.append(text)

    def ask(self, text, *args, **kwargs) -> bool:
        self.questions.append(text)
        return self.answers.pop(0)


class App(Signals):
    def __init__(self, version=(5, 10)):
        super().__init__()
        self.majorVersion, self.minorVersion = version


class MarkupsLogic:
    def __init__(self):
        self.jumps = []

    def JumpSlicesToLocation(self, x, y, z, centered) -> None:
        self.jumps.append((x, y, z))


def install(monkeypatch, scene, version=(5, 10)):
    """Put the stand-ins in place for one test and import the module afresh; returns (module, ui, dialogs)."""
    import slicer

    monkeypatch.setitem(sys.modules, "qt", qt_module())
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted_loadable_module())
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", parameter_node_wrapper())
    monkeypatch.delitem(sys.modules, "CACScoring", raising=False)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    ui, dialogs = Ui(), Dialogs()
    markups = MarkupsLogic()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", App(version), raising=False)
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()  # the real one, as Slicer's module holds it
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(
        markups=types.SimpleNamespace(logic=lambda: markups),
        terminologies=types.SimpleNamespace(logic=lambda: terminologies)), raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: UiWidget())
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: ui)
    monkeypatch.setattr(slicer.util, "errorDisplay", dialogs.error)
    monkeypatch.setattr(slicer.util, "infoDisplay", dialogs.info)
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", dialogs.ask)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", dialogs.ask)
    module = importlib.import_module("CACScoring")
    monkeypatch.setattr(module, "ensureRequirements", lambda: True)  # installing is tested on its own
    ui.markups = markups
    return module, ui, dialogs
