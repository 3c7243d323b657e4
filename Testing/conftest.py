"""Fixtures for the Slicer module tests: a real MRML scene from the slicer-core package (no mocks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parent.parent / "CACScoring"


@pytest.fixture
def slicer_scene():
    """A fresh MRML scene with the Volumes, Segmentations and Terminologies logics registered."""
    pytest.importorskip("slicer", reason="slicer-core is not installed: pip install slicer-core vtk==9.6.2")
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    from CACScoringSlicerLib.standalone import create_standalone_scene

    standalone = create_standalone_scene()
    yield standalone
    standalone.scene.Clear(1)


@pytest.fixture
def scene_logic(slicer_scene):
    from CACScoringSlicerLib.logic import CACScoringSceneLogic

    logic = CACScoringSceneLogic(slicer_scene.scene)
    yield logic
    logic.stop_live_scoring()


@pytest.fixture
def job_stand_ins(tmp_path, monkeypatch):
    """Launcher and runner stand-ins for segmentation jobs (see slicer_job_stand_ins); returns the launcher."""
    import slicer_job_stand_ins

    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    yield slicer_job_stand_ins.install(tmp_path, monkeypatch)
    from CACScoringSlicerLib import inference_worker

    inference_worker.shutdown()  # the session's process runs the stand-ins: none of it outlives the test
