"""The grid of explanation maps and uncertainty: the network's input size, the CT's box.

Maps are computed at the network's input size (e.g. 128 x 128) for every axial slice and kept
there: upsampling them to the CT's 512 x 512 would add no detail, only memory and time (16x
per volume). The grid covers the same box as the canonical slices, with pixel-centred
sampling (``align_corners=False``): map pixel ``y`` lies at CT pixel ``(y + 0.5) n / m - 0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def centre_indices(fine: int, coarse: int) -> np.ndarray:
    """For each coarse pixel, the fine pixel nearest to its centre."""
    positions = (np.arange(coarse) + 0.5) * fine / coarse - 0.5
    return np.clip(np.rint(positions), 0, fine - 1).astype(np.intp)


def coarse_indices(fine: int, coarse: int) -> np.ndarray:
    """For each fine pixel, the coarse pixel that contains it."""
    return np.clip(((np.arange(fine) + 0.5) * coarse / fine).astype(np.intp), 0, coarse - 1)


def labels_on_map_grid(labels: np.ndarray, map_size: Sequence[int]) -> np.ndarray:
    """Canonical labels (slices, rows, columns) sampled at the map pixels' centres."""
    rows = centre_indices(labels.shape[1], int(map_size[0]))
    columns = centre_indices(labels.shape[2], int(map_size[1]))
    return labels[:, rows][:, :, columns]


def map_spacing(
    spacing: Sequence[float], slice_shape: Sequence[int], map_size: Sequence[int]
) -> tuple[float, float, float]:
    """Spacing in mm of the map grid from the canonical spacing and slice size."""
    return (
        float(spacing[0]),
        float(spacing[1]) * slice_shape[0] / map_size[0],
        float(spacing[2]) * slice_shape[1] / map_size[1],
    )


def map_values_at(
    values: np.ndarray, slice_shape: Sequence[int], points: tuple[np.ndarray, ...]
) -> np.ndarray:
    """Values of a map volume at canonical CT voxels ``points`` (slice, row, column arrays)."""
    rows = coarse_indices(slice_shape[0], values.shape[1])
    columns = coarse_indices(slice_shape[1], values.shape[2])
    return values[points[0], rows[points[1]], columns[points[2]]]


def upsample_slice(values: np.ndarray, slice_shape: Sequence[int]) -> np.ndarray:
    """One map slice resized bilinearly (pixel-centred) to the CT slice size, for display."""
    from scipy import ndimage

    if tuple(values.shape) == tuple(slice_shape):
        return values
    zoom = (slice_shape[0] / values.shape[0], slice_shape[1] / values.shape[1])
    return ndimage.zoom(values, zoom, order=1, mode="nearest", grid_mode=True)
