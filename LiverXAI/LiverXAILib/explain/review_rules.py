"""The review list's items and rules: slices where a heatmap and the prediction disagree, or
where the network is unsure (see :func:`explanation_quality.review_list` for the rules)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..constants import CLASS_NAMES, LIVER
from ..segment.masks import Box, bounding_box
from .attention_measures import (
    DEFAULT_MARGIN_MM,
    _dilate_plane,
    _expanded,
    _margin_half_widths,
    _slice_counts,
    _SliceStats,
    region_for_class,
    with_margin,
)

LOW_ATTENTION_INSIDE = "low-attention-inside"
ATTENTION_ON_BACKGROUND = "attention-on-background"
UNCERTAIN = "uncertain"
UNCERTAINTY_METHOD = "uncertainty"  # the ``method`` of review items raised by rule (c)

INSIDE_THRESHOLD = 0.5
RELATIVE_SHORTFALL = 0.5  # rule (a): below half of the case's median inside fraction
HOT_THRESHOLD = 0.5
UNCERTAINTY_THRESHOLD = 0.5
MIN_REGION_VOXELS = 50
_READABLE = {"tumor": "tumour"}  # class names as written in reasons


# --- the review list -----------------------------------------------------------------------
@dataclass(frozen=True)
class ReviewItem:
    """One slice where prediction and explanation disagree, or where the network is unsure."""

    slice: int  # canonical slice index (axis 0)
    class_id: int
    method: str  # a heatmap method, or UNCERTAINTY_METHOD for kind "uncertain"
    severity: float  # 0..1, higher = more worrying
    reason: str  # one line for a clinician
    kind: str  # LOW_ATTENTION_INSIDE | ATTENTION_ON_BACKGROUND | UNCERTAIN | "liver-end" |
    # "methods-disagree" (the last two from the review score)
    first_slice: int | None = None  # the range of neighbouring slices this item stands for
    last_slice: int | None = None  # (None: ``slice`` alone)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (camelCase keys, severity rounded to 4 decimals); ``firstSlice``
        and ``lastSlice`` give the item's range of slices."""
        return {
            "slice": self.slice,
            "firstSlice": self.slice if self.first_slice is None else self.first_slice,
            "lastSlice": self.slice if self.last_slice is None else self.last_slice,
            "classId": self.class_id,
            "class": CLASS_NAMES[self.class_id],
            "method": self.method,
            "severity": round(self.severity, 4),
            "reason": self.reason,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class _Rules:
    """The settings of :func:`review_list`."""

    spacing: tuple[float, float, float]
    margin_mm: float = DEFAULT_MARGIN_MM
    inside_threshold: float = INSIDE_THRESHOLD
    hot_threshold: float = HOT_THRESHOLD
    uncertainty_threshold: float = UNCERTAINTY_THRESHOLD
    min_region_voxels: int = MIN_REGION_VOXELS


@dataclass
class _ClassRegion:
    """A class's predicted region, the region with margin, and its voxel count per slice."""

    class_id: int
    region: np.ndarray
    box: Box | None
    margin: np.ndarray
    margin_box: Box | None
    counts: np.ndarray

    @classmethod
    def build(cls, labels: np.ndarray, class_id: int, rules: _Rules) -> _ClassRegion:
        region = region_for_class(labels, class_id)
        box = bounding_box(region)
        margin = with_margin(region, rules.spacing, rules.margin_mm)
        return cls(class_id, region, box, margin, bounding_box(margin), _slice_counts(region, box))

    def distance_mm(
        self, index: int, row: int, column: int, spacing: Sequence[float]
    ) -> float | None:
        """In-plane distance (mm) from a pixel of slice ``index`` to the nearest voxel of the
        region on that slice (None when the slice has none)."""
        if self.box is None or self.counts[index] == 0:
            return None
        _, rows, columns = self.box
        found_rows, found_columns = np.nonzero(self.region[index, rows, columns])
        row_mm = (found_rows + (rows.start - row)) * spacing[1]
        column_mm = (found_columns + (columns.start - column)) * spacing[2]
        return float(math.sqrt(np.min(row_mm**2 + column_mm**2)))

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.class_id]

    @property
    def readable(self) -> str:
        return _READABLE.get(self.name, self.name)


def _low_attention_inside(
    stats: _SliceStats, target: _ClassRegion, method: str, label: str, rules: _Rules
) -> list[ReviewItem]:
    """Rule (a): slices holding the class whose heatmap mass lies mostly outside it, and far
    less inside than is typical for this case (see ``review_list``)."""
    fraction = stats.inside_fraction()
    counted = (target.counts >= rules.min_region_voxels) & np.isfinite(fraction)
    if not counted.any():
        return []
    typical = float(np.median(fraction[counted]))
    threshold = min(rules.inside_threshold, RELATIVE_SHORTFALL * typical)
    listed = counted & (fraction < threshold)
    items = []
    for index in np.flatnonzero(listed):
        share = float(fraction[index])
        reason = (
            f"only {share:.0%} of the {target.readable} {label} lies inside the predicted "
            f"{target.readable} ({rules.margin_mm:g} mm margin); {typical:.0%} is typical "
            "for this case"
        )
        severity = 1.0 - share / typical if typical > 0 else 1.0
        items.append(
            ReviewItem(int(index), target.class_id, method, severity, reason, LOW_ATTENTION_INSIDE)
        )
    return items


def _attention_on_background(
    stats: _SliceStats, target: _ClassRegion, method: str, label: str, rules: _Rules
) -> list[ReviewItem]:
    """Rule (b): slices whose hot peak lies outside the class's region with margin."""
    fraction = stats.inside_fraction()
    listed = (stats.peak >= rules.hot_threshold) & ~stats.peak_inside & (stats.total > 0)
    items = []
    for index in np.flatnonzero(listed):
        peak, outside = float(stats.peak[index]), 1 - float(fraction[index])
        row, column = int(stats.peak_rows[index]), int(stats.peak_columns[index])
        distance = target.distance_mm(int(index), row, column, rules.spacing)
        if distance is None:
            reason = (
                f"the {target.readable} {label} is hot here (peak {peak:.2f}) but no "
                f"{target.readable} is predicted on this slice"
            )
        else:
            reason = (
                f"the {target.readable} {label} peaks ({peak:.2f}) {_format_mm(distance)} from "
                f"the nearest predicted {target.readable}; {outside:.0%} of its attention on "
                f"this slice lies outside"
            )
        severity = min(peak * outside, 1.0)  # heatmaps are scaled to [0, 1]
        items.append(
            ReviewItem(
                int(index), target.class_id, method, severity, reason, ATTENTION_ON_BACKGROUND
            )
        )
    return items


def _format_mm(distance_mm: float) -> str:
    return f"{distance_mm:.0f} mm" if distance_mm >= 10 else f"{distance_mm:.1f} mm"


def _boundary_plane(labels_plane: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another label (both sides of every label change)."""
    boundary = np.zeros(labels_plane.shape, dtype=bool)
    vertical = labels_plane[1:] != labels_plane[:-1]
    boundary[1:] |= vertical
    boundary[:-1] |= vertical
    horizontal = labels_plane[:, 1:] != labels_plane[:, :-1]
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    return boundary


def border_uncertainty(uncertainty: np.ndarray, labels: np.ndarray, rules: _Rules) -> np.ndarray:
    """Per slice, the mean uncertainty over the boundary band of the predicted organ (liver +
    tumour): the pixels within ``rules.margin_mm`` of any change of label. NaN on slices with
    fewer than ``rules.min_region_voxels`` of organ or no border."""
    means = np.full(labels.shape[0], np.nan)
    organ = labels >= LIVER
    box = bounding_box(organ)
    if box is None:
        return means
    counts = _slice_counts(organ, box)
    del organ
    half_widths = _margin_half_widths(rules.spacing, max(rules.margin_mm, 0.0))
    # The band reaches one pixel beyond the organ plus the margin.
    _, rows, columns = _expanded(box, labels.shape, len(half_widths) + 1, half_widths[0] + 2)
    for index in np.flatnonzero(counts >= rules.min_region_voxels):
        band = _dilate_plane(_boundary_plane(labels[index, rows, columns]), half_widths)
        size = int(np.count_nonzero(band))
        if size:  # else the organ fills the whole slice: no border to judge
            total = uncertainty[index, rows, columns].sum(where=band, dtype=np.float64)
            means[index] = float(total) / size
    return means


def _uncertain(band_means: np.ndarray, rules: _Rules) -> list[ReviewItem]:
    """Rule (c): organ slices whose boundary band has a high mean uncertainty
    (``band_means`` from :func:`border_uncertainty`)."""
    items = []
    for index in np.flatnonzero(np.nan_to_num(band_means) >= rules.uncertainty_threshold):
        mean = float(band_means[index])
        reason = (
            f"the network is unsure here: mean uncertainty {mean:.2f} within "
            f"{rules.margin_mm:g} mm of the predicted liver and tumour borders"
        )
        items.append(
            ReviewItem(int(index), LIVER, UNCERTAINTY_METHOD, min(mean, 1.0), reason, UNCERTAIN)
        )
    return items


def _merged_and_sorted(items: list[ReviewItem]) -> list[ReviewItem]:
    """One item per (slice, class, method, kind), the most severe; most severe first."""
    kept: dict[tuple[int, int, str, str], ReviewItem] = {}
    for item in items:
        key = (item.slice, item.class_id, item.method, item.kind)
        if key not in kept or item.severity > kept[key].severity:
            kept[key] = item
    return sorted(kept.values(), key=lambda i: (-i.severity, i.slice, i.class_id, i.method, i.kind))
