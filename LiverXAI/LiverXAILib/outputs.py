"""Writing a Segment & Explain result to files: volumes, segmentation, report and overview."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import scene as mrml
from .atomic import atomic_path
from .constants import CLASS_NAMES
from .orientation import canonical_orientation, canonical_spacing
from .results import SegmentAndExplainResult
from .volume_io import write_volume


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(_finite(data), indent=2, default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    """NaN and infinity become null: they are not valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_segmentation(scene: Any, segmentation_node: Any, path: Path) -> None:
    """Save a segmentation node as .seg.nrrd through Slicer's own storage node, atomically."""
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        with atomic_path(path, suffix=".seg.nrrd") as temporary:
            storage.SetFileName(str(temporary))
            if not storage.WriteData(segmentation_node):
                raise RuntimeError(f"Writing {path.name} failed.")
    finally:
        scene.RemoveNode(storage)


def write_outputs(
    scene: Any,
    input_node: Any,
    result: SegmentAndExplainResult,
    out_dir: Path,
    stem: str,
    input_path: Path,
) -> dict[str, Any]:
    """Write every output file for one case; returns the report (written by the caller)."""
    from .overview import render_overview

    out_dir.mkdir(parents=True, exist_ok=True)
    ct, ijk_to_ras = mrml.read_volume_node(input_node)
    labelmap = scene.GetNodeByID(result.labelmapNodeID)
    labels, _ = mrml.read_volume_node(labelmap)
    write_volume(out_dir / f"{stem}_label.nii.gz", labels, ijk_to_ras)
    heatmaps = {}
    for name, node_id in result.heatmapNodeIDs.items():
        heatmap, _ = mrml.read_volume_node(scene.GetNodeByID(node_id))
        write_volume(out_dir / f"{stem}_gradcam_{name}.nii.gz", heatmap, ijk_to_ras)
        heatmaps[name] = heatmap
    write_segmentation(
        scene, scene.GetNodeByID(result.segmentationNodeID), out_dir / f"{stem}.seg.nrrd"
    )

    orientation = canonical_orientation(ijk_to_ras)
    render_overview(
        out_dir / f"{stem}_overview.png",
        orientation.apply(ct),
        orientation.apply(labels),
        {name: orientation.apply(h) for name, h in heatmaps.items()},
        canonical_spacing(ijk_to_ras, orientation),
        title=stem,
    )
    report = result.to_dict()
    report.update({"input": str(input_path), "classes": list(CLASS_NAMES)})
    return report
