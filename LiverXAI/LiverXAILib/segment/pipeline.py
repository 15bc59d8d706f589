"""Segment & Explain on arrays: CT array and geometry in, labels, maps and measurements out.

The product path without a scene: reorient to canonical axial slices, segment every slice
(and estimate the uncertainty), clean the labels in 3D, then explain the *cleaned* labels on
the slices that hold them (what the clean-up removed is described, not explained), normalise
the maps once per volume, measure the explanations on the map grid, list slices to review and
measure each lesion. ``LiverXAILogic`` adds the scene nodes around it; the benchmark and
batch runs call it directly.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..constants import LIVER, TUMOR
from ..explain.attention_measures import region_for_class
from ..explain.methods import METHODS, normalize_volume
from ..explain.review_score import (
    SliceFeatures,
    body_outline,
    load_score_model,
    score_review_items,
    slice_features,
)
from .inference import SliceInferenceEngine, SliceOutputs
from .lesions import Lesion, measure_lesions
from .map_grid import labels_on_map_grid, map_spacing
from .orientation import CanonicalOrientation, canonical_orientation, canonical_spacing
from .postprocessing import (
    LabelStatistics,
    clean_labels,
    drop_small_tumors,
    label_statistics,
    label_warnings,
)
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
    clean_up: dict[str, Any] = field(default_factory=dict)  # removed_by_clean_up
    slice_features: SliceFeatures | None = None  # the review score's, on canonical slices

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
    volume = orientation.apply(array)
    outputs, clean_up, timings = _segment_and_explain(
        engine, volume, spacing, class_ids, methods, uncertainty, report, cancel
    )
    mark = time.perf_counter()
    report(0.95, "Measuring the explanations")
    labels = outputs.labels
    map_labels = labels_on_map_grid(labels, outputs.map_size)
    statistics = label_statistics(labels, spacing)
    heatmaps = {
        method: {
            c: normalize_volume(
                outputs.heatmaps[method, c],
                METHODS[method].normalization,
                region_for_class(map_labels, c),
            )
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
        clean_up=clean_up,
    )
    _assess(result, engine.cam_layer_name, labels_on_map_grid(volume, outputs.map_size))
    timings["postprocess"] = time.perf_counter() - mark
    result.timings = timings
    return result


def _segment_and_explain(
    engine: SliceInferenceEngine,
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    class_ids: Sequence[int],
    methods: Sequence[str],
    uncertainty: UncertaintySpec | None,
    report: Callable[[float, str], None],
    cancel: threading.Event | None,
) -> tuple[SliceOutputs, dict[str, Any], dict[str, float]]:
    """Segment every slice, clean the labels in 3D (``outputs.labels`` become the cleaned
    ones), then explain the cleaned labels on the slices that hold them. Returns the outputs,
    what the clean-up removed and the timings."""
    segment_share = 0.45 if methods else 0.94
    outputs = engine.run(
        volume,
        progress=lambda fraction, message: report(segment_share * fraction, message),
        cancel=cancel,
        uncertainty=uncertainty,
        slice_spacing_mm=spacing[0],  # canonical axis 0: the 2.5D slice step's axis
    )
    timings = {"inference": outputs.seconds}
    mark = time.perf_counter()
    labels = drop_small_tumors(clean_labels(outputs.labels, spacing), spacing, engine.min_tumor_ml)
    clean_up = removed_by_clean_up(outputs.labels, labels, spacing)
    outputs.labels = labels
    timings["clean-up"] = time.perf_counter() - mark
    if methods:
        mark = time.perf_counter()
        engine.explain(
            volume,
            labels_on_map_grid(labels, outputs.map_size),
            class_ids,
            methods,
            progress=lambda fraction, message: report(0.45 + 0.49 * fraction, message),
            cancel=cancel,
            outputs=outputs,
            slice_spacing_mm=spacing[0],
        )
        timings["explain"] = time.perf_counter() - mark
    phases = {k: v for k, v in outputs.phase_seconds.items() if k not in ("segment", "explain")}
    timings.update({f"inference: {k}": v for k, v in phases.items()})
    return outputs, clean_up, timings


def removed_by_clean_up(
    raw: np.ndarray, cleaned: np.ndarray, spacing: Sequence[float]
) -> dict[str, Any]:
    """What the network labelled and the 3D clean-up removed: millilitres of liver organ
    (tumour included) and of tumour set to background, and the canonical slices concerned."""
    voxel_ml = math.prod(float(s) for s in spacing) / 1000.0
    liver = tumour = 0
    slices = []
    for index in range(raw.shape[0]):
        lost = (raw[index] >= LIVER) & (cleaned[index] == 0)
        count = int(np.count_nonzero(lost))
        if count:
            liver += count
            tumour += int(np.count_nonzero(lost & (raw[index] == TUMOR)))
            slices.append(index)
    return {"liverMl": liver * voxel_ml, "tumorMl": tumour * voxel_ml, "slices": slices}


def clean_up_note(removed_liver_ml: float, removed_tumor_ml: float, slices: Sequence[int]) -> str:
    """One sentence for the report on what the clean-up removed ("" when nothing was)."""
    if not slices:
        return ""
    tumour = f", {removed_tumor_ml:.1f} mL of it tumour," if removed_tumor_ml > 0 else ""
    where = "slice" if len(slices) == 1 else "slices"
    return (
        f"The network also labelled {removed_liver_ml:.1f} mL as liver{tumour} on {where} "
        f"{_ranges(slices)} that the 3D clean-up removed (not connected to the liver, or tumour "
        "away from it). It is not part of the result and is not explained."
    )


def _ranges(numbers: Sequence[int]) -> str:
    """Sorted slice numbers as ranges: 3-7, 12."""
    parts: list[str] = []
    ordered = sorted(numbers)
    start = previous = ordered[0]
    for number in [*ordered[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(f"{start}" if start == previous else f"{start}–{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(parts)


def _assess(result: PipelineResult, cam_layer: str | None, ct_on_map_grid: np.ndarray) -> None:
    """Quality figures and the review list on the map grid, slices in input numbering."""
    from ..explain.quality import assess_explanations

    map_labels = labels_on_map_grid(result.labels, result.map_size)
    assessment = assess_explanations(
        result.heatmaps,
        map_labels,
        map_spacing(result.spacing, result.labels.shape[1:], result.map_size),
        result.uncertainty,
        method_labels={m: METHODS[m].label for m in result.heatmaps},
    )
    quality = assessment.to_dict()
    items = _scored_review(result, assessment, map_labels, ct_on_map_grid, quality)
    for item in [i.to_dict() for i in items] if items is not None else quality["review"]:
        canonical = item.pop("slice")
        span = sorted(result.input_slice(item[key]) for key in ("firstSlice", "lastSlice"))
        item["firstSlice"], item["lastSlice"] = span
        if span[0] != span[1]:  # a merged item's reason names its slices (input numbering)
            item["reason"] = f"slices {span[0]}–{span[1]}: {item['reason']}"
        result.review.append(
            {"slice": result.input_slice(canonical), "canonicalSlice": canonical, **item}
        )
    del quality["review"]
    if result.orientation.flips[0]:  # per-slice lists in input order
        for per_class in quality.get("perSlice", {}).values():
            for figures in per_class.values():
                for key, values in figures.items():
                    figures[key] = list(reversed(values))
    quality["methods"] = {m: METHODS[m].to_dict(cam_layer) for m in result.heatmaps}
    removed = result.clean_up
    if removed:
        slices = sorted(result.input_slice(s) for s in removed["slices"])
        quality["cleanUp"] = {
            "removedLiverMl": round(removed["liverMl"], 2),
            "removedTumorMl": round(removed["tumorMl"], 2),
            "slices": slices,
            "note": clean_up_note(removed["liverMl"], removed["tumorMl"], slices),
        }
    if result.uncertainty is not None:
        organ = map_labels >= LIVER
        mean = float(result.uncertainty[organ].mean(dtype=np.float64)) if organ.any() else None
        quality["uncertainty"] = {"meanInLiver": mean}
    result.quality = quality


def _scored_review(
    result: PipelineResult,
    assessment: Any,
    map_labels: np.ndarray,
    ct_on_map_grid: np.ndarray,
    quality: dict[str, Any],
) -> list[Any] | None:
    """The review list of the calibrated review score (:mod:`review_score`); None when no
    score is installed (then the rules of :func:`.explanation_quality.review_list` apply)."""
    method = next((m for m, maps in result.heatmaps.items() if LIVER in maps), None)
    model = load_score_model()
    if method is None:  # the score reads the liver's explanation: no explanation, no list
        return [] if model is not None else None
    per_slice = assessment.per_slice[method]["liver"]
    result.slice_features = slice_features(
        result.heatmaps[method][LIVER],
        map_labels,
        result.spacing[0],
        per_slice.get("insideFraction"),
        per_slice.get("pointingGame"),
        assessment.border_uncertainty,
        result.uncertainty,
        body_outline(ct_on_map_grid),
        [maps[LIVER] for m, maps in result.heatmaps.items() if m != method and LIVER in maps],
    )
    if model is None:
        return None
    items = score_review_items(result.slice_features, model, method, METHODS[method].label)
    scored = int(result.slice_features.slices.size)
    flagged = (
        int(np.count_nonzero(model.probability(result.slice_features.values) >= model.threshold))
        if scored
        else 0
    )
    quality["reviewScore"] = {
        "threshold": model.threshold,
        "scoredSlices": scored,
        "flaggedSlices": flagged,
        "calibration": model.calibration.get("summary", ""),
    }
    return items
