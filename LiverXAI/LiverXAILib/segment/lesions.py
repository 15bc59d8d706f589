"""Per-lesion measurements of the predicted tumour: volume, longest axial diameter, confidence.

Lesions are the 3D connected components of the tumour label (26-connectivity, as in
:func:`postprocessing.label_statistics`), largest first. The longest axial diameter is the
largest in-plane distance between two voxel centres of the lesion on any one axial slice (the
RECIST-style measurement); confidence is ``1 - mean uncertainty`` over the lesion's voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from ..constants import TUMOR
from .map_grid import map_values_at
from .masks import CONNECTIVITY_26, bounding_box


@dataclass
class Lesion:
    volume_ml: float
    longest_axial_diameter_mm: float
    confidence: float | None  # None when no uncertainty volume was computed
    slices: list[int]  # axis-0 indices holding the lesion

    def to_dict(self) -> dict:
        return asdict(self)


def longest_in_plane_distance(points_mm: np.ndarray) -> float:
    """Largest distance between two of the (N, 2) points (through their convex hull)."""
    if len(points_mm) < 2:
        return 0.0
    if len(points_mm) > 3:
        try:
            points_mm = points_mm[ConvexHull(points_mm).vertices]
        except QhullError:  # collinear points: every point stays a candidate
            pass
    differences = points_mm[:, None, :] - points_mm[None, :, :]
    return float(np.sqrt((differences**2).sum(axis=-1)).max())


def _row_extremes(plane: np.ndarray) -> np.ndarray:
    """(N, 2) row, column points: the first and last pixel of each occupied row of a 2D mask.
    The convex hull of a region's pixels, hence its longest distance, has only such points as
    vertices."""
    rows = np.flatnonzero(plane.any(axis=1))
    occupied = plane[rows]
    first = occupied.argmax(axis=1)
    last = plane.shape[1] - 1 - occupied[:, ::-1].argmax(axis=1)
    return np.concatenate([np.column_stack([rows, first]), np.column_stack([rows, last])]).astype(
        np.float64
    )


def measure_lesions(
    labels: np.ndarray, spacing_mm: Sequence[float], uncertainty: np.ndarray | None = None
) -> list[Lesion]:
    """Every tumour lesion of a (slices, rows, columns) label volume, largest first.

    ``uncertainty`` may be on the coarser map grid (:mod:`map_grid`) of the same box."""
    tumor = labels == TUMOR
    box = bounding_box(tumor)
    if box is None:
        return []
    components, count = ndimage.label(tumor[box], structure=CONNECTIVITY_26)
    voxel_ml = math.prod(float(s) for s in spacing_mm) / 1000.0
    in_plane = np.asarray(spacing_mm[1:], dtype=np.float64)
    lesions = []
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        mask = components[found] == index
        diameter = 0.0
        for plane in mask:
            if plane.any():
                points = _row_extremes(plane) * in_plane
                diameter = max(diameter, longest_in_plane_distance(points))
        confidence = None
        if uncertainty is not None:
            points = np.nonzero(mask)
            offsets = [b.start + f.start for b, f in zip(box, found, strict=True)]
            points = tuple(p + o for p, o in zip(points, offsets, strict=True))
            region = map_values_at(uncertainty, labels.shape[1:], points)
            confidence = float(1.0 - region.mean(dtype=np.float64))
        first_slice = box[0].start + found[0].start
        slices = [first_slice + i for i in np.flatnonzero(mask.any(axis=(1, 2))).tolist()]
        lesions.append(Lesion(float(mask.sum()) * voxel_ml, diameter, confidence, slices))
    return sorted(lesions, key=lambda lesion: lesion.volume_ml, reverse=True)
