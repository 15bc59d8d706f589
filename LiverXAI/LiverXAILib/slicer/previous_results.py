"""Where a run's output nodes live: tagged with their input and run, in a folder under the study.

Every output node carries attributes naming the input node, the model and the time of the run,
so a later run on the same input finds earlier results (to replace them, or to keep both with
unique names). In the subject hierarchy the outputs go into one folder per run, placed under the
input's study when the CT came from DICOM (else beside the input), as Slicer's DICOM plugins do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .scene import remove_node

INPUT_ATTRIBUTE = "LiverXAI.InputNodeID"
RUN_ATTRIBUTE = "LiverXAI.Run"
MODEL_ATTRIBUTE = "LiverXAI.Model"
STUDY_LEVEL = "Study"


def tag_outputs(nodes: Iterable[Any], input_node: Any, run: str, model: str) -> None:
    """Mark output nodes as results of ``input_node`` from the run named ``run``."""
    for node in nodes:
        node.SetAttribute(INPUT_ATTRIBUTE, input_node.GetID())
        node.SetAttribute(RUN_ATTRIBUTE, run)
        node.SetAttribute(MODEL_ATTRIBUTE, model)


def previous_outputs(scene: Any, input_node: Any, except_run: str | None = None) -> list[Any]:
    """Output nodes of earlier LiverXAI runs on ``input_node`` (all runs but ``except_run``)."""
    found = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetAttribute(INPUT_ATTRIBUTE) != input_node.GetID():
            continue
        if except_run is not None and node.GetAttribute(RUN_ATTRIBUTE) == except_run:
            continue
        found.append(node)
    return found


def previous_runs(scene: Any, input_node: Any) -> list[str]:
    """Names of the earlier runs on ``input_node``, oldest first."""
    runs = [node.GetAttribute(RUN_ATTRIBUTE) for node in previous_outputs(scene, input_node)]
    return list(dict.fromkeys(run for run in runs if run))


def subject_hierarchy(scene: Any) -> Any:
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def study_item(scene: Any, input_node: Any) -> int:
    """The input's study item in the subject hierarchy (0 if the input is in none)."""
    hierarchy = subject_hierarchy(scene)
    item = hierarchy.GetItemByDataNode(input_node)
    if not item:
        return 0
    return hierarchy.GetItemAncestorAtLevel(item, STUDY_LEVEL)


def place_in_run_folder(scene: Any, input_node: Any, nodes: Iterable[Any], name: str) -> int:
    """Put ``nodes`` in a new subject hierarchy folder named ``name`` under the input's study
    (or beside the input when it has no study); returns the folder's item ID."""
    hierarchy = subject_hierarchy(scene)
    parent = study_item(scene, input_node)
    if not parent:
        input_item = hierarchy.GetItemByDataNode(input_node)
        parent = hierarchy.GetItemParent(input_item) if input_item else 0
        parent = parent or hierarchy.GetSceneItemID()
    folder = hierarchy.CreateFolderItem(parent, hierarchy.GenerateUniqueItemName(name))
    for node in nodes:
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, folder)
        else:  # headless scenes have no plugin that adds items for new nodes
            hierarchy.CreateItem(folder, node)
    return folder


def remove_outputs(scene: Any, nodes: Iterable[Any]) -> None:
    """Remove output nodes and the run folders they leave empty."""
    hierarchy = subject_hierarchy(scene)
    folders = set()
    for node in list(nodes):
        item = hierarchy.GetItemByDataNode(node)
        if item:
            folders.add(hierarchy.GetItemParent(item))
        for dependent in [*_dependent_nodes(node), node]:
            remove_node(scene, dependent)
    for folder in folders - {0, hierarchy.GetSceneItemID()}:
        if hierarchy.GetItemDataNode(folder) or _is_study_or_patient(hierarchy, folder):
            continue
        if hierarchy.GetNumberOfItemChildren(folder) == 0:
            hierarchy.RemoveItem(folder)


def _dependent_nodes(node: Any) -> list[Any]:
    """Display and storage nodes of a node, and a volume rendering's property and ROI nodes:
    MRML leaves them behind when the node itself is removed."""
    found = []
    if node.IsA("vtkMRMLVolumeRenderingDisplayNode"):
        for owned in (node.GetVolumePropertyNode(), node.GetROINode()):
            if owned is not None:
                found += [owned, *_dependent_nodes(owned)]
    for index in range(getattr(node, "GetNumberOfDisplayNodes", lambda: 0)()):
        display = node.GetNthDisplayNode(index)
        if display is not None:
            found += [display, *_dependent_nodes(display)]
    for index in range(getattr(node, "GetNumberOfStorageNodes", lambda: 0)()):
        storage = node.GetNthStorageNode(index)
        if storage is not None:
            found.append(storage)
    return found


def _is_study_or_patient(hierarchy: Any, item: int) -> bool:
    return hierarchy.IsItemLevel(item, STUDY_LEVEL) or hierarchy.IsItemLevel(item, "Patient")
