"""A real MRML scene with the module logics CACScoring needs, for use outside the Slicer application.

Inside Slicer the application builds this; under plain Python (the `slicer-core` package: batch runs,
tests) we register the same logics on a fresh scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import slicer


@dataclass
class StandaloneScene:
    scene: slicer.vtkMRMLScene
    app_logic: slicer.vtkSlicerApplicationLogic
    volumes_logic: slicer.vtkSlicerVolumesLogic
    segmentations_logic: slicer.vtkSlicerSegmentationsModuleLogic


def create_standalone_scene() -> StandaloneScene:
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    colors_logic = slicer.vtkMRMLColorLogic()
    colors_logic.SetMRMLApplicationLogic(app_logic)
    colors_logic.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Colors", colors_logic)

    volumes_logic = slicer.vtkSlicerVolumesLogic()
    volumes_logic.SetMRMLScene(scene)
    volumes_logic.SetMRMLApplicationLogic(app_logic)
    app_logic.SetModuleLogic("Volumes", volumes_logic)

    segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLScene(scene)
    segmentations_logic.SetMRMLApplicationLogic(app_logic)
    app_logic.SetModuleLogic("Segmentations", segmentations_logic)
    return StandaloneScene(scene, app_logic, volumes_logic, segmentations_logic)
