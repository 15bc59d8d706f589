"""The result in 3D: volume rendering of liver and tumour, or surfaces, and the camera on the liver.

The labelmap is volume rendered with nearest-neighbour sampling, so the two labels never
blend: the liver is a faint, soft-coloured shell and the tumour an opaque, bright mass that
shows through it. The segmentation's closed surfaces are the other display; one switch
(`set_3d_mode`) shows one or the other. The CT itself can be volume rendered with LiverXAI's
soft-tissue preset, shipped as a Slicer volume property file because slicer-core has no
presets. Everything works on MRML nodes, so it runs in Slicer and headless alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import vtk

from ..constants import CLASS_COLORS, CLASS_NAMES

CT_PRESET = Path(__file__).resolve().parents[2] / "Resources" / "VolumeRendering"
CT_PRESET_FILE = CT_PRESET / "LiverXAI-CT-SoftTissue.vp"
LABEL_PROPERTY_NAME = "LiverXAI liver and tumour"
# Opacity per millimetre of ray: 10 cm of liver let about half the light through, so tumours
# deep inside stay visible; 2 mm of tumour are nearly opaque.
LABEL_OPACITY = {"background": 0.0, "liver": 0.006, "tumor": 0.7}
OPACITY_UNIT_DISTANCE_MM = 1.0
MODES = ("volume-rendering", "surfaces")


def label_volume_property(volume_property: Any) -> None:
    """Fill a vtkVolumeProperty for the labelmap: one colour and opacity per label value."""
    colors = vtk.vtkColorTransferFunction()
    opacity = vtk.vtkPiecewiseFunction()
    for value, name in enumerate(CLASS_NAMES):
        for offset in (-0.49, 0.49):  # flat steps: no ramp between labels
            colors.AddRGBPoint(value + offset, *CLASS_COLORS[name])
            opacity.AddPoint(value + offset, LABEL_OPACITY[name])
    gradient = vtk.vtkPiecewiseFunction()
    gradient.AddPoint(0.0, 1.0)
    gradient.AddPoint(255.0, 1.0)
    volume_property.SetColor(colors)
    volume_property.SetScalarOpacity(opacity)
    volume_property.SetGradientOpacity(gradient)
    volume_property.SetScalarOpacityUnitDistance(OPACITY_UNIT_DISTANCE_MM)
    volume_property.SetInterpolationTypeToNearest()
    volume_property.ShadeOn()
    volume_property.SetAmbient(0.3)
    volume_property.SetDiffuse(0.8)
    volume_property.SetSpecular(0.2)
    volume_property.SetSpecularPower(10.0)


def show_labels_volume_rendering(volume_rendering_logic: Any, labelmap_node: Any) -> Any:
    """Volume render the labelmap (liver faint, tumour bright); returns the display node."""
    display = volume_rendering_logic.CreateDefaultVolumeRenderingNodes(labelmap_node)
    property_node = display.GetVolumePropertyNode()
    property_node.SetName(f"{labelmap_node.GetName()} {LABEL_PROPERTY_NAME}")
    label_volume_property(property_node.GetVolumeProperty())
    display.SetVisibility(True)
    return display


def show_ct_volume_rendering(volume_rendering_logic: Any, ct_node: Any) -> Any:
    """Volume render the CT with the shipped soft-tissue preset; returns the display node.

    A new display node is added to the CT (a rendering the user made stays as it was), and
    only a display node: the CT's voxels and geometry are untouched.
    """
    scene = ct_node.GetScene()
    preset = volume_rendering_logic.AddVolumePropertyFromFile(str(CT_PRESET_FILE))
    if preset is None:
        raise RuntimeError(f"Could not read the volume rendering preset {CT_PRESET_FILE}.")
    try:
        display = scene.AddNode(volume_rendering_logic.CreateVolumeRenderingDisplayNode())
        ct_node.AddAndObserveDisplayNodeID(display.GetID())
        volume_rendering_logic.UpdateDisplayNodeFromVolumeNode(display, ct_node)
        property_node = display.GetVolumePropertyNode()
        property_node.GetVolumeProperty().DeepCopy(preset.GetVolumeProperty())
        property_node.SetName(f"{ct_node.GetName()} soft tissue")
        display.SetVisibility(True)
    finally:  # the preset was only read: neither it nor its storage node stays
        storage = preset.GetStorageNode()
        scene.RemoveNode(preset)
        if storage is not None:
            scene.RemoveNode(storage)
    return display


def volume_rendering_display(labelmap_node: Any) -> Any | None:
    """The labelmap's volume rendering display node, if it has one."""
    for index in range(labelmap_node.GetNumberOfDisplayNodes()):
        display = labelmap_node.GetNthDisplayNode(index)
        if display is not None and display.IsA("vtkMRMLVolumeRenderingDisplayNode"):
            return display
    return None


def set_3d_mode(labelmap_node: Any, segmentation_node: Any, mode: str) -> None:
    """Show the result in 3D as a volume rendering or as surfaces (the other is hidden)."""
    if mode not in MODES:
        raise ValueError(f"Unknown 3D display {mode!r}; choose from {list(MODES)}.")
    rendering = volume_rendering_display(labelmap_node)
    if rendering is not None:
        rendering.SetVisibility(mode == "volume-rendering")
    segmentation_display = segmentation_node.GetDisplayNode()
    segmentation_display.SetVisibility3D(mode == "surfaces" or rendering is None)


def segmentation_bounds(segmentation_node: Any, segment_name: str = "liver") -> list[float] | None:
    """RAS bounds of one segment's closed surface (of the whole segmentation if it is empty)."""
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    bounds = [0.0] * 6
    if segment_id:
        surface = vtk.vtkPolyData()
        segmentation_node.GetClosedSurfaceRepresentation(segment_id, surface)
        if surface.GetNumberOfPoints():
            surface.GetBounds(bounds)
            return _to_world(segmentation_node, bounds)
    segmentation_node.GetRASBounds(bounds)
    return bounds if bounds[0] <= bounds[1] else None


def _to_world(node: Any, bounds: list[float]) -> list[float]:
    """Bounds of a node's local box in world RAS (through its parent transform, if any)."""
    transform = node.GetParentTransformNode()
    if transform is None:
        return bounds
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    corners = [
        matrix.MultiplyPoint((x, y, z, 1.0))[:3]
        for x in bounds[0:2]
        for y in bounds[2:4]
        for z in bounds[4:6]
    ]
    return [f(c[axis] for c in corners) for axis in range(3) for f in (min, max)]


def aim_camera(camera: Any, bounds: list[float], distance_factor: float = 2.2) -> None:
    """Point a camera node at the centre of ``bounds`` (RAS) from the patient's front.

    The camera stands anterior to the box (as Slicer's "Anterior" view), far enough to see
    all of it, with superior up.
    """
    centre = [(bounds[2 * axis] + bounds[2 * axis + 1]) / 2 for axis in range(3)]
    extent = max(bounds[2 * axis + 1] - bounds[2 * axis] for axis in range(3))
    distance = max(extent, 10.0) * distance_factor
    camera.SetFocalPoint(*centre)
    camera.SetPosition(centre[0], centre[1] + distance, centre[2])
    camera.SetViewUp(0.0, 0.0, 1.0)
    camera.ResetClippingRange()


def centre_3d_views(scene: Any, bounds: list[float]) -> int:
    """Aim every 3D view's camera at ``bounds``; returns how many (0 when headless)."""
    cameras = [
        scene.GetNthNodeByClass(index, "vtkMRMLCameraNode")
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLCameraNode"))
    ]
    for camera in cameras:
        aim_camera(camera, bounds)
    return len(cameras)
