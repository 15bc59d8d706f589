"""One run's output nodes: created all together or not at all, tagged, filed and shown.

The labelmap, the explanation and uncertainty maps and the segmentation with closed surfaces,
with the input's geometry and parent transform; SNOMED CT terminology on the segments; the
3D display (volume rendering or surfaces); one subject hierarchy folder for the run; every
description naming the model and the date. On any failure the nodes made so far and the
folder are removed, so the scene is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..constants import CLASS_NAMES
from ..segment.orientation import CanonicalOrientation
from . import scene as mrml
from .display3d import (
    centre_3d_views,
    segmentation_bounds,
    set_3d_mode,
    show_ct_volume_rendering,
    show_labels_volume_rendering,
)
from .previous_results import place_in_run_folder, subject_hierarchy, tag_outputs
from .terminology import apply_terminology


@dataclass(frozen=True)
class RunInfo:
    """One run: the model's name and when it ran (named in every output's description)."""

    model: str
    created: str
    repeat: int = 1

    @property
    def name(self) -> str:
        again = f" ({self.repeat})" if self.repeat > 1 else ""
        return f"{self.model}, {self.created}{again}"

    def by(self) -> str:
        return f"by model {self.model}, {self.created}"


@dataclass(frozen=True)
class Display3D:
    volume_rendering: bool = True
    ct_volume_rendering: bool = False


def add_output_nodes(
    scene: Any,
    module_logic: Callable[[str], Any],
    inputVolumeNode: Any,
    orientation: CanonicalOrientation,
    labels: np.ndarray,
    heatmaps: dict[str, dict[int, np.ndarray]],
    uncertainty: np.ndarray | None,
    uncertainty_description: str,
    run: RunInfo,
    showResults: bool,
    display: Display3D,
) -> dict[str, Any]:
    """Create every output node, or none: on failure the nodes made so far are removed.

    Returns the nodes by role; ``"heatmaps"`` maps method → class name → node ID,
    ``"folder"`` is the run's subject hierarchy folder.
    """
    base = inputVolumeNode.GetName()
    created: dict[str, Any] = {}
    existing = mrml.node_ids(scene)
    folder = 0
    try:
        labelmap = _add_labelmap(scene, inputVolumeNode, orientation.invert(labels), run, created)
        heatmap_ids = _add_heatmaps(scene, inputVolumeNode, orientation, heatmaps, run, created)
        if uncertainty is not None:
            _add_uncertainty(
                scene,
                inputVolumeNode,
                orientation.invert(uncertainty),
                uncertainty_description,
                run,
                created,
            )
        segmentation = _add_segmentation(scene, module_logic, inputVolumeNode, labelmap, run)
        created["segmentation"] = segmentation
        rendering = show_3d(module_logic, inputVolumeNode, labelmap, segmentation, display)
        transform_id = inputVolumeNode.GetTransformNodeID()
        for node in created.values():  # outputs follow the input's parent transform
            node.SetAndObserveTransformNodeID(transform_id)
        tag_outputs([*created.values(), *rendering], inputVolumeNode, run.name, run.model)
        folder = place_in_run_folder(
            scene, inputVolumeNode, created.values(), f"LiverXAI {base} ({run.name})"
        )
        if showResults:
            _show_results(scene, inputVolumeNode, heatmap_ids, labelmap, segmentation)
    except BaseException:
        if folder:
            subject_hierarchy(scene).RemoveItem(folder, False)
        mrml.remove_nodes_except(scene, existing)
        raise
    created["heatmaps"] = heatmap_ids
    created["folder"] = folder
    created["volumeRendering"] = rendering[0].GetID() if rendering else ""
    return created


def _add_labelmap(
    scene: Any, inputVolumeNode: Any, labels: np.ndarray, run: RunInfo, created: dict[str, Any]
) -> Any:
    """The labelmap node of ``labels`` (input's grid), styled and described; into ``created``."""
    base = inputVolumeNode.GetName()
    labelmap = mrml.add_output_volume(
        scene, inputVolumeNode, labels, f"{base} LiverXAI labels", True
    )
    created["labelmap"] = labelmap
    mrml.style_labelmap(scene, labelmap)
    labelmap.SetDescription(
        f"LiverXAI labels (0 background, 1 liver, 2 tumor) of {base} {run.by()}"
    )
    return labelmap


def _add_heatmaps(
    scene: Any,
    inputVolumeNode: Any,
    orientation: CanonicalOrientation,
    heatmaps: dict[str, dict[int, np.ndarray]],
    run: RunInfo,
    created: dict[str, Any],
) -> dict[str, dict[str, str]]:
    """One styled map node per method and class (into ``created`` as ``"<method> <class>"``);
    returns their IDs by method and class name."""
    from ..explain.methods import METHODS, NORMALIZATION_DESCRIPTIONS

    base = inputVolumeNode.GetName()
    heatmap_ids: dict[str, dict[str, str]] = {}
    for method, per_class in heatmaps.items():
        info = METHODS[method]
        normalization = NORMALIZATION_DESCRIPTIONS[info.normalization]
        for class_id, heatmap in per_class.items():
            name = CLASS_NAMES[class_id]
            node = mrml.add_map_volume(
                scene,
                inputVolumeNode,
                orientation.invert(heatmap),
                f"{base} {info.label} {name}",
            )
            created[f"{method} {name}"] = node
            heatmap_ids.setdefault(method, {})[name] = node.GetID()
            mrml.style_heatmap(scene, node, f"{info.label} for {name} {run.by()}: {normalization}")
    return heatmap_ids


def _add_uncertainty(
    scene: Any,
    inputVolumeNode: Any,
    uncertainty: np.ndarray,
    uncertainty_description: str,
    run: RunInfo,
    created: dict[str, Any],
) -> None:
    """The uncertainty map node, styled with its own colours; into ``created``."""
    node = mrml.add_map_volume(
        scene, inputVolumeNode, uncertainty, f"{inputVolumeNode.GetName()} uncertainty"
    )
    created["uncertainty"] = node
    mrml.style_heatmap(
        scene,
        node,
        f"Uncertainty (normalised predictive entropy, 0 = sure, 1 = classes equally "
        f"likely) by {uncertainty_description}, {run.by()}",
        mrml.UNCERTAINTY_COLOR_NODE_IDS,
    )


def _add_segmentation(
    scene: Any,
    module_logic: Callable[[str], Any],
    inputVolumeNode: Any,
    labelmap: Any,
    run: RunInfo,
) -> Any:
    """The segmentation node of the labelmap with closed surfaces and SNOMED CT terms."""
    base = inputVolumeNode.GetName()
    segmentation = mrml.add_segmentation(
        scene,
        module_logic("Segmentations"),
        labelmap,
        inputVolumeNode,
        f"{base} LiverXAI segmentation",
    )
    segmentation.SetDescription(f"Liver and tumour of {base} {run.by()}")
    apply_terminology(segmentation)
    return segmentation


def _show_results(
    scene: Any,
    inputVolumeNode: Any,
    heatmap_ids: dict[str, dict[str, str]],
    labelmap: Any,
    segmentation: Any,
) -> None:
    """Show the input, the first map and the labels in the slice views; centre the 3D views
    on the segmentation."""
    first_heatmap = next(
        (scene.GetNodeByID(i) for ids in heatmap_ids.values() for i in ids.values()),
        None,
    )
    mrml.show_in_slice_views(scene, inputVolumeNode, first_heatmap, labelmap)
    bounds = segmentation_bounds(segmentation)
    if bounds is not None:
        centre_3d_views(scene, bounds)


def show_3d(
    module_logic: Callable[[str], Any],
    inputVolumeNode: Any,
    labelmap: Any,
    segmentation: Any,
    display: Display3D,
) -> list[Any]:
    """Volume rendering (of the labels, and of the CT if asked) or surfaces; returns the
    volume rendering display nodes made."""
    made = []
    if display.volume_rendering or display.ct_volume_rendering:
        volume_rendering = module_logic("VolumeRendering")
        made.append(show_labels_volume_rendering(volume_rendering, labelmap))
        if display.ct_volume_rendering:
            made.append(show_ct_volume_rendering(volume_rendering, inputVolumeNode))
    set_3d_mode(
        labelmap, segmentation, "volume-rendering" if display.volume_rendering else "surfaces"
    )
    return made
