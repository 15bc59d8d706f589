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
uncertainty volume, unsure slices) into a list of slices for a clinician to look at.

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
from scipy.stats import rankdata

from .constants import CLASS_NAMES, LIVER, TUMOR

Box = tuple[slice, slice, slice]
Heatmaps = Mapping[str, Mapping[int, np.ndarray]]

LOW_ATTENTION_INSIDE = "low-attention-inside"
ATTENTION_ON_BACKGROUND = "attention-on-background"
UNCERTAIN = "uncertain"
UNCERTAINTY_METHOD = "uncertainty"  # the ``method`` of review items raised by rule (c)

DEFAULT_MARGIN_MM = 5.0
INSIDE_THRESHOLD = 0.5
RELATIVE_SHORTFALL = 0.5  # rule (a): below half of the case's median inside fraction
HOT_THRESHOLD = 0.5
UNCERTAINTY_THRESHOLD = 0.5
MIN_REGION_VOXELS = 50
_TOLERANCE = 1e-6  # mm; keeps offsets that lie exactly on the margin ellipse
_READABLE = {"tumor": "tumour"}  # class names as written in reasons


# --- regions -------------------------------------------------------------------------------
def region_for_class(labels: np.ndarray, class_id: int) -> np.ndarray:
    """Boolean region of a class: the liver is ``labels >= 1`` (tumour included), the tumour
    ``labels == 2``."""
    if class_id == LIVER:
        return labels >= LIVER
    if class_id == TUMOR:
        return labels == TUMOR
    raise ValueError(f"no region for class {class_id}; expected {LIVER} or {TUMOR}")


def with_margin(
    region: np.ndarray, spacing: Sequence[float], margin_mm: float = DEFAULT_MARGIN_MM
) -> np.ndarray:
    """The region grown by ``margin_mm`` within each slice (elliptical in pixels when the row
    and column spacings differ); never across slices."""
    region = np.asarray(region, dtype=bool)
    if margin_mm <= 0:
        return region.copy()
    half_widths = _margin_half_widths(spacing, margin_mm)
    grown = np.zeros(region.shape, dtype=bool)
    box = _bounding_box(region)
    if box is None:
        return grown
    slices, rows, columns = _expanded(box, region.shape, len(half_widths) - 1, half_widths[0])
    for index in range(slices.start, slices.stop):
        plane = region[index, rows, columns]
        if plane.any():
            grown[index, rows, columns] = _dilate_plane(plane, half_widths)
    return grown


def _margin_half_widths(spacing: Sequence[float], margin_mm: float) -> list[int]:
    """Half width in columns of the margin ellipse at each row offset 0, 1, ... (its last
    entry is the largest row offset that fits)."""
    _, row_mm, column_mm = _spacing3(spacing)
    widths = []
    offset = 0
    while offset * row_mm <= margin_mm + _TOLERANCE:
        left = max(margin_mm**2 - (offset * row_mm) ** 2, 0.0)
        widths.append(int(math.floor((math.sqrt(left) + _TOLERANCE) / column_mm)))
        offset += 1
    return widths


def _spacing3(spacing: Sequence[float]) -> tuple[float, float, float]:
    if len(spacing) != 3 or min(float(s) for s in spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive values (slice, row, column), got {spacing!r}")
    return float(spacing[0]), float(spacing[1]), float(spacing[2])


def _dilate_plane(plane: np.ndarray, half_widths: list[int]) -> np.ndarray:
    """Binary dilation of a 2D mask by the ellipse of ``half_widths``, with shifted ORs: the
    row-wise dilations are nested, so each needed width is kept on the way up."""
    needed = set(half_widths)
    by_width = {0: plane}
    row_grown = plane.copy()
    for width in range(1, half_widths[0] + 1):
        row_grown[:, width:] |= plane[:, :-width]
        row_grown[:, :-width] |= plane[:, width:]
        if width in needed:
            by_width[width] = row_grown.copy()
    grown = by_width[half_widths[0]].copy()
    for offset in range(1, len(half_widths)):
        shifted = by_width[half_widths[offset]]
        grown[offset:] |= shifted[:-offset]
        grown[:-offset] |= shifted[offset:]
    return grown


def _bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every True voxel of a 3D mask, or None when it is empty."""
    occupied = np.flatnonzero(mask.any(axis=(1, 2)))
    if occupied.size == 0:
        return None
    slices = slice(int(occupied[0]), int(occupied[-1]) + 1)
    inner = mask[slices]
    rows = np.flatnonzero(inner.any(axis=(0, 2)))
    columns = np.flatnonzero(inner.any(axis=(0, 1)))
    return (
        slices,
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(columns[0]), int(columns[-1]) + 1),
    )


def _expanded(box: Box, shape: tuple[int, ...], rows: int, columns: int) -> Box:
    """The box grown in-plane by ``rows`` and ``columns`` pixels, clipped to the volume."""
    slices, row_range, column_range = box
    return (
        slices,
        slice(max(row_range.start - rows, 0), min(row_range.stop + rows, shape[1])),
        slice(max(column_range.start - columns, 0), min(column_range.stop + columns, shape[2])),
    )


def _slice_counts(mask: np.ndarray, box: Box | None) -> np.ndarray:
    """Number of True voxels in each slice."""
    counts = np.zeros(mask.shape[0], dtype=np.int64)
    if box is not None:
        counts[box[0]] = np.count_nonzero(mask[box], axis=(1, 2))
    return counts


# --- per-slice statistics of one heatmap ---------------------------------------------------
@dataclass
class _SliceStats:
    total: np.ndarray  # heatmap mass per slice (float64)
    inside: np.ndarray  # mass inside the region with margin per slice (float64)
    peak: np.ndarray  # hottest value per slice
    peak_rows: np.ndarray
    peak_columns: np.ndarray
    peak_inside: np.ndarray  # bool: the hottest pixel lies inside the region with margin

    def inside_fraction(self) -> np.ndarray:
        fraction = np.full(self.total.shape, np.nan)
        explained = self.total > 0
        fraction[explained] = self.inside[explained] / self.total[explained]
        return fraction


def _slice_stats(
    heatmap: np.ndarray, region_with_margin: np.ndarray, box: Box | None = None
) -> _SliceStats:
    """Mass, mass inside and the hottest pixel of every slice, in one pass over the heatmap."""
    _check_same_shape(heatmap, region_with_margin)
    if box is None:
        box = _bounding_box(region_with_margin)
    count, _, columns = heatmap.shape
    total = np.zeros(count)
    inside = np.zeros(count)
    flat_peaks = np.zeros(count, dtype=np.int64)
    for index in range(count):
        plane = heatmap[index]
        total[index] = plane.sum(dtype=np.float64)
        flat_peaks[index] = plane.argmax()
        if box is not None and box[0].start <= index < box[0].stop:
            inside[index] = plane[box[1], box[2]].sum(
                where=region_with_margin[index, box[1], box[2]], dtype=np.float64
            )
    peak_rows, peak_columns = np.divmod(flat_peaks, columns)
    every = np.arange(count)
    return _SliceStats(
        total=total,
        inside=inside,
        peak=heatmap[every, peak_rows, peak_columns].astype(np.float64),
        peak_rows=peak_rows,
        peak_columns=peak_columns,
        peak_inside=region_with_margin[every, peak_rows, peak_columns],
    )


def _check_same_shape(volume: np.ndarray, reference: np.ndarray) -> None:
    if volume.ndim != 3 or volume.shape != reference.shape:
        raise ValueError(
            f"expected 3D volumes of one shape, got {volume.shape} and {reference.shape}"
        )


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def _hits(stats: _SliceStats, region_counts: np.ndarray) -> np.ndarray:
    """Pointing-game result per slice: 1 hit, 0 miss, NaN when the slice does not count."""
    counted = (stats.total > 0) & (region_counts > 0)
    return np.where(counted, stats.peak_inside.astype(np.float64), np.nan)


def _mean_or_nan(values: np.ndarray) -> float:
    counted = values[~np.isnan(values)]
    return float(counted.mean()) if counted.size else float("nan")


# --- public measures -----------------------------------------------------------------------
def attention_inside(
    heatmap: np.ndarray, region_with_margin: np.ndarray
) -> tuple[np.ndarray, float]:
    """Share of each slice's heatmap mass inside the region (NaN where a slice has no mass),
    and the share of the whole volume's mass (NaN when there is none)."""
    stats = _slice_stats(heatmap, region_with_margin)
    return stats.inside_fraction(), _ratio(float(stats.inside.sum()), float(stats.total.sum()))


def pointing_game(
    heatmap: np.ndarray, region_with_margin: np.ndarray, region: np.ndarray
) -> tuple[np.ndarray, float]:
    """Per slice 1.0 when the hottest pixel lies inside ``region_with_margin``, else 0.0; NaN
    when the slice has no heatmap mass or no ``region``. Also the hit rate over counted slices
    (NaN when none counts)."""
    _check_same_shape(region, heatmap)
    hits = _hits(
        _slice_stats(heatmap, region_with_margin), _slice_counts(region, _bounding_box(region))
    )
    return hits, _mean_or_nan(hits)


def rank_agreement(
    map_a: np.ndarray,
    map_b: np.ndarray,
    region: np.ndarray,
    max_voxels: int = 200_000,
    seed: int = 0,
) -> float:
    """Spearman's rho of two maps over the voxels of ``region`` (a seeded random sample of
    ``max_voxels`` of them when there are more); NaN for fewer than 10 voxels or a map that
    is constant there."""
    _check_same_shape(map_a, region)
    _check_same_shape(map_b, region)
    box = _bounding_box(region)
    if box is None:
        return float("nan")
    positions = np.flatnonzero(region[box])
    if positions.size < 10:
        return float("nan")
    if positions.size > max_voxels:
        chosen = np.random.default_rng(seed).choice(positions.size, max_voxels, replace=False)
        positions = positions[np.sort(chosen)]
    where = np.unravel_index(positions, region[box].shape)
    values_a = map_a[box][where].astype(np.float64)
    values_b = map_b[box][where].astype(np.float64)
    if np.ptp(values_a) == 0 or np.ptp(values_b) == 0:
        return float("nan")
    rho = np.corrcoef(rankdata(values_a), rankdata(values_b))[0, 1]
    return float(np.clip(rho, -1.0, 1.0))


# --- the review list -----------------------------------------------------------------------
@dataclass(frozen=True)
class ReviewItem:
    """One slice where prediction and explanation disagree, or where the network is unsure."""

    slice: int  # canonical slice index (axis 0)
    class_id: int
    method: str  # a heatmap method, or UNCERTAINTY_METHOD for kind "uncertain"
    severity: float  # 0..1, higher = more worrying
    reason: str  # one line for a clinician
    kind: str  # LOW_ATTENTION_INSIDE | ATTENTION_ON_BACKGROUND | UNCERTAIN

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (camelCase keys, severity rounded to 4 decimals)."""
        return {
            "slice": self.slice,
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
        box = _bounding_box(region)
        margin = with_margin(region, rules.spacing, rules.margin_mm)
        return cls(class_id, region, box, margin, _bounding_box(margin), _slice_counts(region, box))

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


def _uncertain(uncertainty: np.ndarray, labels: np.ndarray, rules: _Rules) -> list[ReviewItem]:
    """Rule (c): organ slices whose boundary band has a high mean uncertainty."""
    organ = labels >= LIVER
    box = _bounding_box(organ)
    if box is None:
        return []
    counts = _slice_counts(organ, box)
    del organ
    half_widths = _margin_half_widths(rules.spacing, max(rules.margin_mm, 0.0))
    # The band reaches one pixel beyond the organ plus the margin.
    _, rows, columns = _expanded(box, labels.shape, len(half_widths) + 1, half_widths[0] + 2)
    items = []
    for index in np.flatnonzero(counts >= rules.min_region_voxels):
        band = _dilate_plane(_boundary_plane(labels[index, rows, columns]), half_widths)
        size = int(np.count_nonzero(band))
        if size == 0:  # the organ fills the whole slice: no border to judge
            continue
        mean = float(uncertainty[index, rows, columns].sum(where=band, dtype=np.float64)) / size
        if mean >= rules.uncertainty_threshold:
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
        items += _uncertain(uncertainty, labels, rules)
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
