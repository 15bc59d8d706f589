"""Render the scene's 3D view to a PNG without a screen, through Slicer's displayable managers.

The same displayable managers that draw Slicer's 3D view (volume rendering, segmentation
surfaces, models, the view box) draw into an offscreen VTK render window: with the slicer-core
wheel this is VTK's EGL window, which runs on a CPU with Mesa. A temporary view and camera node
are added for the render and removed afterwards. Meant for headless runs (reports, batch
snapshots); inside the Slicer application capture the 3D view widget instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import vtk

from ..io.atomic import atomic_path
from .display3d import aim_camera

DISPLAYABLE_MANAGERS = (
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",
    "vtkMRMLModelDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager3D",
    "vtkMRMLVolumeRenderingDisplayableManager",
)
LAYOUT_NAME = "LiverXAIOffscreen"


def offscreen_rendering_available() -> str:
    """ "" when an offscreen OpenGL window can be made here, else why not."""
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(True)
    try:
        if not window.SupportsOpenGL():
            return f"{window.GetClassName()} reports no OpenGL support on this machine."
    finally:
        window.Finalize()
    return ""


def render_3d_view(
    scene: Any,
    app_logic: Any,
    path: str | Path,
    bounds: list[float] | None = None,
    size: tuple[int, int] = (800, 800),
) -> Path:
    """Render every node shown in 3D to ``path`` (PNG, written atomically).

    The camera looks at ``bounds`` (RAS) from the patient's front; without bounds it frames
    everything shown.
    """
    why_not = offscreen_rendering_available()
    if why_not:
        raise RuntimeError(f"Cannot render the 3D view offscreen: {why_not}")
    view = scene.AddNewNodeByClass("vtkMRMLViewNode", "LiverXAI offscreen view")
    camera = scene.AddNewNodeByClass("vtkMRMLCameraNode", "LiverXAI offscreen camera")
    window = vtk.vtkRenderWindow()
    group = None
    try:
        view.SetLayoutName(LAYOUT_NAME)
        view.SetBoxVisible(True)
        view.SetAxisLabelsVisible(True)
        camera.SetLayoutName(LAYOUT_NAME)
        renderer, interactor = _set_up_window(window, size)  # both live until the end
        group = _displayable_managers(app_logic, renderer)
        group.SetMRMLDisplayableNode(view)
        _render(window, renderer, camera, bounds)
        return _write_png(window, Path(path))
    finally:
        if group is not None:
            group.SetMRMLDisplayableNode(None)
        window.Finalize()
        scene.RemoveNode(camera)
        scene.RemoveNode(view)


def _set_up_window(window: Any, size: tuple[int, int]) -> tuple[Any, Any]:
    """Make ``window`` offscreen of ``size`` with one renderer; returns the renderer and the
    interactor the displayable managers attach to (keep both referenced while rendering)."""
    window.SetOffScreenRendering(True)
    window.SetSize(*size)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkRenderWindowInteractor()  # the managers need one to attach to
    interactor.SetRenderWindow(window)
    return renderer, interactor


def _displayable_managers(app_logic: Any, renderer: Any) -> Any:
    """The group of Slicer's 3D displayable managers (:data:`DISPLAYABLE_MANAGERS`, registered
    if need be) drawing into ``renderer``."""
    import slicer

    factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(app_logic)
    for name in DISPLAYABLE_MANAGERS:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    return factory.InstantiateDisplayableManagers(renderer)


def _render(window: Any, renderer: Any, camera: Any, bounds: list[float] | None) -> None:
    """Aim the camera at ``bounds`` (or frame everything shown) and render."""
    if bounds is not None:
        aim_camera(camera, bounds)
    else:
        renderer.ResetCamera()
    window.Render()
    camera.ResetClippingRange()
    window.Render()


def _write_png(window: Any, target: Path) -> Path:
    """Capture the rendered window and write it to ``target`` as a PNG, atomically."""
    capture = vtk.vtkWindowToImageFilter()
    capture.SetInput(window)
    capture.ReadFrontBufferOff()
    capture.Update()
    with atomic_path(target, suffix=".png") as temporary:
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(temporary))
        writer.SetInputData(capture.GetOutput())
        writer.Write()
        if writer.GetErrorCode():
            raise RuntimeError(f"Writing {target} failed.")
    return target
