"""Shared helpers for boolean volume masks: the bounding box and 3D connectivity."""

from __future__ import annotations

import numpy as np

Box = tuple[slice, slice, slice]
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)  # faces, edges and corners


def bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every True voxel of a 3D mask, or None when it is empty.

    The rows and columns are searched only within the occupied slices, which keeps it cheap
    for a small region in a large volume."""
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
