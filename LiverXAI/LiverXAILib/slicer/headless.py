"""A Slicer application logic and MRML scene without Qt, from the slicer-core wheel.

It registers the module logics that LiverXAI looks up by name (Colors, Volumes,
Segmentations, VolumeRendering, SubjectHierarchy), the way the Slicer application does, so the
same Logic code runs in Slicer, in tests and in the headless commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class HeadlessApplication:
    scene: Any
    appLogic: Any
    moduleLogics: dict[str, Any]


def create_headless_application() -> HeadlessApplication:
    """New scene and application logic with the module logics LiverXAI uses."""
    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {}
    for name, logic_class in (
        ("Colors", slicer.vtkMRMLColorLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("VolumeRendering", slicer.vtkSlicerVolumeRenderingLogic),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
    ):
        logic = logic_class()
        if hasattr(logic, "SetMRMLApplicationLogic"):
            logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    return HeadlessApplication(scene, app_logic, logics)
