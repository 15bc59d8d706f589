"""Writing a Segment & Explain result to files: volumes, segmentation, report and overview."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import CLASS_NAMES
from ..slicer.results import SegmentAndExplainResult
from .atomic import atomic_path
from .volumes import write_volume


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    with atomic_path(path) as temporary:
        temporary.write_text(
            json.dumps(_finite(data), indent=2, default=str, allow_nan=False), encoding="utf-8"
        )


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


FILE_SLUGS = {"gradcam": "gradcam", "gradcam++": "gradcampp", "integrated-gradients": "ig"}
REPORT_FIGURE_SLICES = 4


def build_report(result: SegmentAndExplainResult, input_label: str) -> dict[str, Any]:
    """The JSON report of one case: the result plus the flat keys the HTML report reads."""
    report = result.to_dict()
    quality = dict(report.get("explanationQuality") or {})
    uncertainty = dict(quality.pop("uncertainty", None) or {})
    report["explanationQuality"] = quality
    report.update(
        {
            "input": input_label,
            "classes": list(CLASS_NAMES),
            "tumorDiametersMm": [x["longest_axial_diameter_mm"] for x in result.lesions],
            "tumorConfidences": [x["confidence"] for x in result.lesions],
            "uncertainty": {"method": result.uncertaintyMethod, **uncertainty},
        }
    )
    return report


def _views(result: SegmentAndExplainResult, ct: np.ndarray) -> dict[str, Any]:
    """The CT (input order) and the result's arrays as canonical views for the figures."""
    arrays = result.arrays
    if arrays is None:
        raise ValueError("This result carries no arrays (made without segmentAndExplain?).")
    return {
        "orientation": arrays.orientation,
        "spacing": arrays.spacing,
        "ct": arrays.orientation.apply(ct),
        "labels": arrays.labels,
        "heatmaps": arrays.heatmaps,
        "uncertainty": arrays.uncertainty,
    }


def write_html_report(
    path: Path, report: dict[str, Any], result: SegmentAndExplainResult, views: dict[str, Any]
) -> None:
    """The self-contained HTML report with figures of the most informative slices."""
    from ..explain.methods import METHODS
    from ..report.figures import choose_report_slices, render_slice_figure
    from ..report.html import write_report_html

    review = [item["canonicalSlice"] for item in result.reviewItems]
    slices = choose_report_slices(
        views["labels"], review, views["uncertainty"], REPORT_FIGURE_SLICES
    )
    by_canonical = {item["canonicalSlice"]: item for item in result.reviewItems}
    depth = views["labels"].shape[0]
    flipped = views["orientation"].flips[0]
    figures = []
    for index in slices:
        number = depth - 1 - index if flipped else index
        reason = by_canonical.get(index, {}).get("reason")
        caption = f"Slice {number}" + (f" — to review: {reason}" if reason else "")
        png = render_slice_figure(
            views["ct"],
            views["labels"],
            views["heatmaps"],
            views["uncertainty"],
            views["spacing"],
            index,
            method_labels={m: METHODS[m].label for m in views["heatmaps"]},
            title=f"Slice {number}",
        )
        figures.append((caption, png))
    write_report_html(path, report, figures)


def write_reports(
    result: SegmentAndExplainResult, ct: np.ndarray, out_dir: Path, stem: str
) -> Path:
    """Write ``STEM_report.json`` and ``STEM_report.html`` from the result's arrays and the
    CT (``ct`` in the input's voxel order); returns the HTML path."""
    report = build_report(result, stem)
    views = _views(result, ct)
    html_path = out_dir / f"{stem}_report.html"
    write_html_report(html_path, report, result, views)
    write_json(out_dir / f"{stem}_report.json", report)
    return html_path


def write_outputs(
    result: SegmentAndExplainResult,
    ct: np.ndarray,
    segmentation_node: Any,
    out_dir: Path,
    stem: str,
    input_path: Path,
) -> dict[str, Any]:
    """Write every output file of one case except the JSON report, which is returned for
    the caller to complete and write: volumes, segmentation, overview and HTML report. The
    volumes come from the result's arrays (``ct`` is the input's, in its voxel order); the
    segmentation file from ``segmentation_node`` (Slicer's format, with its terminology)."""
    from ..explain.methods import METHODS
    from ..report.overview import render_overview

    out_dir.mkdir(parents=True, exist_ok=True)
    views = _views(result, ct)
    arrays = result.arrays
    labels = arrays.input_order(arrays.labels)
    write_volume(out_dir / f"{stem}_label.nii.gz", labels, arrays.ijk_to_ras)
    maps = {  # on the network-size grid over the CT's box (map_grid.py)
        f"{stem}_{FILE_SLUGS[method]}_{name}.nii.gz": values
        for method, per_class in arrays.heatmaps.items()
        for name, values in per_class.items()
    }
    if arrays.uncertainty is not None:
        maps[f"{stem}_uncertainty.nii.gz"] = arrays.uncertainty
    for file_name, values in maps.items():
        write_volume(out_dir / file_name, arrays.input_order(values), arrays.map_ijk_to_ras(values))
    write_segmentation(
        segmentation_node.GetScene(), segmentation_node, out_dir / f"{stem}.seg.nrrd"
    )
    first_method = next(iter(views["heatmaps"]), None)
    depth, flipped = views["labels"].shape[0], views["orientation"].flips[0]
    render_overview(
        out_dir / f"{stem}_overview.png",
        views["ct"],
        views["labels"],
        views["heatmaps"].get(first_method, {}),
        views["spacing"],
        title=stem,
        method_label=METHODS[first_method].label if first_method else "Grad-CAM",
        slice_number=lambda i: depth - 1 - i if flipped else i,  # the report's numbering
    )
    report = build_report(result, str(input_path))
    write_html_report(out_dir / f"{stem}_report.html", report, result, views)
    return report
