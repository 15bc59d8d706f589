"""The MRML bridge: volume nodes ↔ numpy arrays with geometry, and LiverXAI's output nodes.

Everything here takes the scene (and module logics) it works on as arguments, so it runs
unchanged in the Slicer application and on the slicer-core wheel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import slicer.util
import vtk

from ..constants import CLASS_COLORS, CLASS_NAMES

LABEL_COLOR_TABLE_NAME = "LiverXAI labels"
HEAT_COLOR_NODE_IDS = ("vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeRainbow")
UNCERTAINTY_COLOR_NODE_IDS = (
    "vtkMRMLColorTableNodeFileViridis.txt",
    "vtkMRMLPETProceduralColorNodePET-Rainbow2",
    "vtkMRMLColorTableNodeRainbow",
)


def ijk_to_ras_array(volume_node: Any) -> np.ndarray:
    """The node's IJK-to-RAS matrix as a 4×4 numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def read_volume_node(volume_node: Any) -> tuple[np.ndarray, np.ndarray]:
    """Read-only view of the voxels in (K, J, I) order and the IJK-to-RAS matrix."""
    array = slicer.util.arrayFromVolume(volume_node).view()
    array.flags.writeable = False
    return array, ijk_to_ras_array(volume_node)


def add_volume_from_array(
    scene: Any, array: np.ndarray, ijk_to_ras: np.ndarray, name: str, labelmap: bool = False
) -> Any:
    """New scalar (or labelmap) volume node holding ``array`` with the given geometry."""
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, scene.GenerateUniqueName(name))
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijk_to_ras[r, c]))
    node.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.CreateDefaultDisplayNodes()
    return node


def add_output_volume(
    scene: Any, reference: Any, array: np.ndarray, name: str, labelmap: bool = False
) -> Any:
    """New volume node with exactly the reference node's geometry (origin, spacing, axes)."""
    return add_volume_from_array(scene, array, ijk_to_ras_array(reference), name, labelmap)


def add_map_volume(scene: Any, reference: Any, array: np.ndarray, name: str) -> Any:
    """New volume node for a map on a coarser grid covering the reference node's box (see
    :mod:`map_grid`); shown with linear interpolation, as Slicer resamples it for display."""
    from ..segment.orientation import coarse_ijk_to_ras

    columns, rows, slices = reference.GetImageData().GetDimensions()
    matrix = coarse_ijk_to_ras(ijk_to_ras_array(reference), (slices, rows, columns), array.shape)
    node = add_volume_from_array(scene, array, matrix, name)
    node.GetDisplayNode().SetInterpolate(1)
    return node


def label_color_table(scene: Any) -> Any:
    """The colour table naming background/liver/tumor (created once per scene)."""
    existing = scene.GetFirstNodeByName(LABEL_COLOR_TABLE_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", LABEL_COLOR_TABLE_NAME)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(CLASS_NAMES))
    for index, name in enumerate(CLASS_NAMES):
        red, green, blue = CLASS_COLORS[name]
        table.SetColor(index, name, red, green, blue, 0.0 if index == 0 else 1.0)
    return table


def style_labelmap(scene: Any, labelmap_node: Any) -> None:
    labelmap_node.GetDisplayNode().SetAndObserveColorNodeID(label_color_table(scene).GetID())


def style_heatmap(
    scene: Any,
    heatmap_node: Any,
    description: str,
    color_node_ids: tuple[str, ...] = HEAT_COLOR_NODE_IDS,
) -> None:
    """Heat colours on a fixed [0, 1] window; values under 0.05 transparent when overlaid."""
    display = heatmap_node.GetDisplayNode()
    for color_id in color_node_ids:
        if scene.GetNodeByID(color_id) is not None:
            display.SetAndObserveColorNodeID(color_id)
            break
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(0.05)
    display.SetUpperThreshold(1.0)
    heatmap_node.SetAttribute("LiverXAI.HeatmapNormalization", description)
    heatmap_node.SetDescription(description)


def add_segmentation(
    scene: Any, segmentations_logic: Any, labelmap_node: Any, reference: Any, name: str
) -> Any:
    """Segmentation with segments "liver" and "tumor" (empty if absent) and closed surfaces."""
    segmentation_node = scene.AddNewNodeByClass(
        "vtkMRMLSegmentationNode", scene.GenerateUniqueName(name)
    )
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    if not segmentations_logic.ImportLabelmapToSegmentationNode(labelmap_node, segmentation_node):
        raise RuntimeError("Importing the labelmap into the segmentation failed.")
    segmentation = segmentation_node.GetSegmentation()
    for name_ in CLASS_NAMES[1:]:
        segment_id = segmentation.GetSegmentIdBySegmentName(name_)
        if not segment_id:
            segment_id = segmentation.AddEmptySegment(name_, name_)
        segmentation.GetSegment(segment_id).SetColor(*CLASS_COLORS[name_])
    segmentation_node.CreateClosedSurfaceRepresentation()
    return segmentation_node


def show_in_slice_views(
    scene: Any, background: Any, foreground: Any | None, label: Any, opacity: float = 0.4
) -> None:
    """Put CT, heatmap and labelmap in every slice view the scene has (none when headless)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(opacity)
        composite.SetLabelVolumeID(label.GetID())


def node_ids(scene: Any) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def remove_node(scene: Any, node: Any) -> None:
    """Remove a node and its subject hierarchy item. In the Slicer application the hierarchy
    plugins remove the item with the node; on a headless scene nothing does, and stale items
    pile up (the hierarchy logs "DataNodeCache inconsistency")."""
    if node.GetScene() is None:
        return
    hierarchy = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
    item = hierarchy.GetItemByDataNode(node) if hierarchy is not None else 0
    if item:
        hierarchy.RemoveItem(item, False, False)
    scene.RemoveNode(node)


def remove_nodes_except(scene: Any, keep: set[str]) -> None:
    """Remove every node added since ``keep`` was taken (rollback after a failure)."""
    for node_id in node_ids(scene) - keep:
        node = scene.GetNodeByID(node_id)
        if node is not None:
            remove_node(scene, node)


def hierarchy_items(scene: Any) -> set[int]:
    """IDs of every subject hierarchy item of the scene (none without a hierarchy node)."""
    hierarchy = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
    if hierarchy is None:
        return set()
    items = vtk.vtkIdList()
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), items, True)
    return {items.GetId(i) for i in range(items.GetNumberOfIds())}


def remove_case_nodes(scene: Any, nodes: set[str], items: set[int]) -> None:
    """Remove every node and subject hierarchy item added since ``nodes`` and ``items``
    (``node_ids`` and ``hierarchy_items``) were taken.

    ``scene.remove_nodes_except`` removes the nodes with their items; the items that hold
    no node (the run folder ``segmentAndExplain`` adds) are removed here, or they would pile
    up over a folder of cases.
    """
    remove_nodes_except(scene, nodes)
    hierarchy = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
    if hierarchy is not None:
        for item in sorted(hierarchy_items(scene) - items, reverse=True):  # children first
            if hierarchy.GetItemParent(item):  # still there
                hierarchy.RemoveItem(item, False, False)
