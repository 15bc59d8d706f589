"""Segment & Explain on arrays: CT array and geometry in, labels, maps and measurements out.

The product path without a scene: reorient to canonical axial slices, run the slice engine
(segmentation, explanations, uncertainty), clean the labels in 3D, normalise the maps once
per volume, measure the explanations on the map grid, list slices to review and measure each
lesion. ``LiverXAILogic`` adds the scene nodes around it; the benchmark and batch runs call it
directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constants import LIVER
from .explain import METHODS, normalize_volume
from .inference import SliceInferenceEngine
from .lesions import Lesion, measure_lesions
from .map_grid import labels_on_map_grid, map_spacing
from .orientation import CanonicalOrientation, canonical_orientation, canonical_spacing
from .postprocessing import LabelStatistics, clean_labels, label_statistics, label_warnings
from .uncertainty import UncertaintySpec


@dataclass
class PipelineResult:
    """Everything in canonical orientation (slice, row, column); maps on the map grid."""

    orientation: CanonicalOrientation
    spacing: tuple[float, float, float]
    labels: np.ndarray  # uint8, cleaned
    statistics: LabelStatistics
    heatmaps: dict[str, dict[int, np.ndarray]]  # method -> class id -> [0, 1]
    uncertainty: np.ndarray | None
    map_size: tuple[int, int]
    quality: dict[str, Any]  # perClass, agreement, perSlice (input slice order), methods, ...
    review: list[dict[str, Any]]  # worst first; "slice" in input numbering + "canonicalSlice"
    lesions: list[Lesion]
    timings: dict[str, float] = field(default_factory=dict)
    integrated_gradients_estimate: float | None = None
    warnings: list[str] = field(default_factory=list)  # for the clinician (label_warnings)

    def input_slice(self, canonical_index: int) -> int:
        """Canonical axial index → index along the input axis that runs inferior-superior
        (the K index of an axially stored scan, as Slicer numbers its slices)."""
        depth = self.labels.shape[0]
        return depth - 1 - canonical_index if self.orientation.flips[0] else canonical_index


def run_pipeline(
    array: np.ndarray,
    ijk_to_ras: np.ndarray,
    engine: SliceInferenceEngine,
    class_ids: Sequence[int] = (),
    methods: Sequence[str] = ("gradcam",),
    uncertainty: UncertaintySpec | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: threading.Event | None = None,
) -> PipelineResult:
    """Segment ``array`` (Slicer's (K, J, I) order) and explain ``class_ids`` with
    ``methods``; progress fractions run from 0 to 1."""
    report = progress or (lambda _fraction, _message: None)
    orientation = canonical_orientation(ijk_to_ras)
    spacing = canonical_spacing(ijk_to_ras, orientation)
    methods = list(methods) if class_ids else []
    outputs = engine.run(
        orientation.apply(array),
        class_ids,
        progress=lambda fraction, message: report(0.94 * fraction, message),
        cancel=cancel,
        methods=methods,
        uncertainty=uncertainty,
    )
    timings = {"inference": outputs.seconds}
    timings.update({f"inference: {k}": v for k, v in outputs.phase_seconds.items()})

    mark = time.perf_counter()
    report(0.95, "Cleaning up in 3D and measuring the explanations")
    labels = clean_labels(outputs.labels, spacing)
    statistics = label_statistics(labels, spacing)
    heatmaps = {
        method: {
            c: normalize_volume(outputs.heatmaps[method, c], METHODS[method].normalization)
            for c in class_ids
        }
        for method in methods
    }
    result = PipelineResult(
        orientation=orientation,
        spacing=spacing,
        labels=labels,
        statistics=statistics,
        heatmaps=heatmaps,
        uncertainty=outputs.uncertainty,
        map_size=outputs.map_size,
        quality={},
        review=[],
        lesions=measure_lesions(labels, spacing, outputs.uncertainty),
        integrated_gradients_estimate=outputs.integrated_gradients_estimate,
        warnings=label_warnings(labels, statistics),
    )
    _assess(result, engine.cam_layer_name)
    timings["postprocess"] = time.perf_counter() - mark
    result.timings = timings
    return result


def _assess(result: PipelineResult, cam_layer: str | None) -> None:
    """Quality figures and the review list on the map grid, slices in input numbering."""
    from .explanation_quality import assess_explanations

    map_labels = labels_on_map_grid(result.labels, result.map_size)
    assessment = assess_explanations(
        result.heatmaps,
        map_labels,
        map_spacing(result.spacing, result.labels.shape[1:], result.map_size),
        result.uncertainty,
        method_labels={m: METHODS[m].label for m in result.heatmaps},
    )
    quality = assessment.to_dict()
    for item in quality.pop("review"):
        canonical = item.pop("slice")
        result.review.append(
            {"slice": result.input_slice(canonical), "canonicalSlice": canonical, **item}
        )
    if result.orientation.flips[0]:  # per-slice lists in input order
        for per_class in quality.get("perSlice", {}).values():
            for figures in per_class.values():
                for key, values in figures.items():
                    figures[key] = list(reversed(values))
    quality["methods"] = {m: METHODS[m].to_dict(cam_layer) for m in result.heatmaps}
    if result.uncertainty is not None:
        organ = map_labels >= LIVER
        mean = float(result.uncertainty[organ].mean(dtype=np.float64)) if organ.any() else None
        quality["uncertainty"] = {"meanInLiver": mean}
    result.quality = quality
