"""Measured explanation quality: does each heatmap look where the segmentation says the class is?

Volumes are canonical: (slices, rows, columns), axis 0 the axial slice, ``spacing`` in mm in
the same order. ``labels`` holds 0 background, 1 liver, 2 tumour; the region of the liver
class is ``labels >= 1`` (the organ, tumour included), that of the tumour ``labels == 2``.
Heatmaps are non-negative, scaled once per volume, keyed ``heatmaps[method][class_id]``.

Measures, per slice and per volume, for each method and class:

- **inside fraction**: the share of the heatmap's mass inside the class's predicted region,
  grown in-plane by a margin (default 5 mm) so that attention on the border still counts;
- **pointing game** (Zhang et al. 2016): whether the slice's hottest pixel lies inside that
  region; a slice counts only when it has heatmap mass and the class is predicted on it;
- **rank agreement**: Spearman's rho between two methods' maps over the region with margin.

:func:`review_list` turns disagreements between prediction and explanation (and, given an
uncertainty volume, unsure slices) into a list of slices for a clinician to look at by fixed
rules. Segment & Explain lists the slices of the calibrated review score instead
(:mod:`review_score`, built on these measures); the rules apply when no score is installed.

Everything works slice by slice or on the bounding box of a region, so a 512 x 512 x 600
volume needs no full-size floating-point temporaries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from .attention_measures import (
    DEFAULT_MARGIN_MM,
    _check_same_shape,
    _hits,
    _mean_or_nan,
    _ratio,
    _slice_stats,
    _spacing3,
    attention_inside,
    pointing_game,
    rank_agreement,
    region_for_class,
    with_margin,
)
from .review_rules import (
    ATTENTION_ON_BACKGROUND,
    HOT_THRESHOLD,
    INSIDE_THRESHOLD,
    LOW_ATTENTION_INSIDE,
    MIN_REGION_VOXELS,
    UNCERTAIN,
    UNCERTAINTY_METHOD,
    UNCERTAINTY_THRESHOLD,
    ReviewItem,
    _attention_on_background,
    _ClassRegion,
    _low_attention_inside,
    _merged_and_sorted,
    _Rules,
    _uncertain,
    border_uncertainty,
)

__all__ = [
    "ATTENTION_ON_BACKGROUND",
    "LOW_ATTENTION_INSIDE",
    "UNCERTAIN",
    "UNCERTAINTY_METHOD",
    "ExplanationAssessment",
    "ReviewItem",
    "assess_explanations",
    "attention_inside",
    "pointing_game",
    "rank_agreement",
    "region_for_class",
    "review_list",
    "with_margin",
]

Heatmaps = Mapping[str, Mapping[int, np.ndarray]]


def review_list(
    heatmaps: Heatmaps,
    labels: np.ndarray,
    spacing: Sequence[float],
    uncertainty: np.ndarray | None = None,
    margin_mm: float = DEFAULT_MARGIN_MM,
    inside_threshold: float = INSIDE_THRESHOLD,
    hot_threshold: float = HOT_THRESHOLD,
    uncertainty_threshold: float = UNCERTAINTY_THRESHOLD,
    min_region_voxels: int = MIN_REGION_VOXELS,
    method_labels: Mapping[str, str] | None = None,
) -> list[ReviewItem]:
    """Slices where prediction and explanation disagree, most severe first (ties by slice).

    (a) ``low-attention-inside``: the slice holds at least ``min_region_voxels`` of the class
    and its inside fraction (heatmap mass inside the region with margin) is below both
    ``inside_threshold`` and half the median over this case's slices of that class and
    method; severity = 1 - fraction / median. The median makes the rule relative to what a
    method can resolve (a coarse Grad-CAM spills around a small tumour on every slice: only
    the slices where it spills much more than usual are worth a look). A slice whose heatmap
    is all zero is not listed.

    (b) ``attention-on-background``: the slice's peak is at least ``hot_threshold`` and lies
    outside the region with margin (also where the class is not predicted at all); severity =
    peak x the fraction of the slice's mass outside; the reason gives the in-plane distance to
    the nearest predicted voxel of the class on that slice.

    (c) ``uncertain`` (only with ``uncertainty``, the normalised predictive entropy): for each
    slice with at least ``min_region_voxels`` of predicted organ (liver + tumour), the mean
    uncertainty over its *boundary band*: the pixels within ``margin_mm`` (in-plane) of any
    change of predicted label (background, liver, tumour). Listed when the mean is at least
    ``uncertainty_threshold``; severity = the mean; class liver, method ``"uncertainty"``.
    A confident network is uncertain only in the one- or two-pixel transition at each border,
    so the band mean stays low whatever the organ's size, while a mean of 0.5 means much of
    the band is undecided. The organ's interior is left out: it would dilute the mean on large
    slices, and an undecided interior flips the predicted label, which makes it band.

    Items of the same (slice, class, method, kind) are merged, keeping the most severe.
    """
    rules = _Rules(
        _spacing3(spacing),
        margin_mm,
        inside_threshold,
        hot_threshold,
        uncertainty_threshold,
        min_region_voxels,
    )
    return _assess(heatmaps, labels, uncertainty, rules, method_labels, agreement=False).review


# --- the whole assessment ------------------------------------------------------------------
@dataclass
class ExplanationAssessment:
    """Every measure of this module for one case."""

    per_class: dict[str, dict[str, dict[str, float]]]
    """method -> class name -> insideFraction, pointingGameHitRate, slicesExplained (slices
    counted in the pointing game: class predicted and heatmap mass)."""
    agreement: list[dict[str, Any]]
    """{"methods": [a, b], "class": name, "spearman": rho} per pair of methods and class."""
    review: list[ReviewItem]
    per_slice: dict[str, dict[str, dict[str, list[float]]]]
    """method -> class name -> insideFraction, pointingGame: one value per slice (NaN where
    undefined)."""
    border_uncertainty: np.ndarray | None = None
    """Per slice, the mean uncertainty in the organ's boundary band (NaN where undefined; see
    :func:`review_list` rule (c)); None without an uncertainty volume. Not in ``to_dict``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: NaN as None, floats rounded to 4 decimals."""
        return {
            "perClass": _json_ready(self.per_class),
            "agreement": _json_ready(self.agreement),
            "review": [item.to_dict() for item in self.review],
            "perSlice": _json_ready(self.per_slice),
        }


def assess_explanations(
    heatmaps: Heatmaps,
    labels: np.ndarray,
    spacing: Sequence[float],
    uncertainty: np.ndarray | None = None,
    margin_mm: float = DEFAULT_MARGIN_MM,
    method_labels: Mapping[str, str] | None = None,
) -> ExplanationAssessment:
    """Inside fraction and pointing game per method and class, rank agreement of every pair of
    methods per class (over the class's region with margin), and the review list with the
    default thresholds of :func:`review_list`."""
    rules = _Rules(_spacing3(spacing), margin_mm)
    return _assess(heatmaps, labels, uncertainty, rules, method_labels, agreement=True)


def _assess(
    heatmaps: Heatmaps,
    labels: np.ndarray,
    uncertainty: np.ndarray | None,
    rules: _Rules,
    method_labels: Mapping[str, str] | None,
    agreement: bool,
) -> ExplanationAssessment:
    """Everything, one class at a time (so only one class's masks are held at once)."""
    _check_inputs(heatmaps, labels, uncertainty)
    label_of = dict(method_labels or {})
    assessment = ExplanationAssessment(
        per_class={method: {} for method in heatmaps},
        agreement=[],
        review=[],
        per_slice={method: {} for method in heatmaps},
    )
    items: list[ReviewItem] = []
    for class_id in sorted({int(c) for maps in heatmaps.values() for c in maps}):
        target = _ClassRegion.build(labels, class_id, rules)
        methods = [method for method, maps in heatmaps.items() if class_id in maps]
        for method in methods:
            stats = _slice_stats(heatmaps[method][class_id], target.margin, target.margin_box)
            hits = _hits(stats, target.counts)
            assessment.per_class[method][target.name] = {
                "insideFraction": _ratio(float(stats.inside.sum()), float(stats.total.sum())),
                "pointingGameHitRate": _mean_or_nan(hits),
                "slicesExplained": int(np.count_nonzero(~np.isnan(hits))),
            }
            assessment.per_slice[method][target.name] = {
                "insideFraction": stats.inside_fraction().tolist(),
                "pointingGame": hits.tolist(),
            }
            label = label_of.get(method, method)
            items += _low_attention_inside(stats, target, method, label, rules)
            items += _attention_on_background(stats, target, method, label, rules)
        for method_a, method_b in combinations(methods if agreement else [], 2):
            maps_a, maps_b = heatmaps[method_a][class_id], heatmaps[method_b][class_id]
            assessment.agreement.append(
                {
                    "methods": [method_a, method_b],
                    "class": target.name,
                    "spearman": rank_agreement(maps_a, maps_b, target.margin),
                }
            )
    if uncertainty is not None:
        assessment.border_uncertainty = border_uncertainty(uncertainty, labels, rules)
        items += _uncertain(assessment.border_uncertainty, rules)
    assessment.review = _merged_and_sorted(items)
    return assessment


def _check_inputs(heatmaps: Heatmaps, labels: np.ndarray, uncertainty: np.ndarray | None) -> None:
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (slices, rows, columns), got shape {labels.shape}")
    for maps in heatmaps.values():
        for heatmap in maps.values():
            _check_same_shape(heatmap, labels)
    if uncertainty is not None:
        _check_same_shape(uncertainty, labels)


def _json_ready(value: Any) -> Any:
    """Nested dicts and lists with NaN and infinities as None, floats rounded to 4 decimals."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(value) else None
    return value
