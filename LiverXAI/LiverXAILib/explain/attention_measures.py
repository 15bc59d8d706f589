"""Where does a heatmap look, compared with the predicted region? The measures behind
:mod:`explanation_quality`: regions with an in-plane margin, per-slice heatmap statistics,
the inside fraction, the pointing game and rank agreement between two maps.

Volumes are canonical (slices, rows, columns), ``spacing`` in mm in the same order; work is
done per slice or on a region's bounding box, so large volumes need no full-size
floating-point temporaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from ..constants import LIVER, TUMOR
from ..segment.masks import Box, bounding_box

DEFAULT_MARGIN_MM = 5.0
_TOLERANCE = 1e-6  # mm; keeps offsets that lie exactly on the margin ellipse


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
    box = bounding_box(region)
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
        box = bounding_box(region_with_margin)
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
        _slice_stats(heatmap, region_with_margin), _slice_counts(region, bounding_box(region))
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
    box = bounding_box(region)
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
