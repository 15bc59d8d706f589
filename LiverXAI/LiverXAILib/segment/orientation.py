"""Canonical axial orientation: exact axis permutations and flips, and their inverse.

The network always sees axial slices in one orientation, the radiological convention: array
axes ``(slice, row, column)`` run inferior→superior, anterior→posterior and patient
right→left (LPS index order). ``CanonicalOrientation`` reaches it with axis permutations and
flips only, so it is exact and its inverse returns the input grid voxel for voxel. An oblique
scan is assigned to its nearest anatomical axes; nothing is resampled. Arrays are in Slicer's
(K, J, I) order, geometry is the IJK-to-RAS matrix.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# For each RAS axis (x, y, z): the canonical array axis it becomes, and the sign the index
# must move in (x → column towards patient left, y → row towards posterior, z → slice up).
_CANONICAL_AXIS = {0: 2, 1: 1, 2: 0}
_CANONICAL_SIGN = {0: -1.0, 1: -1.0, 2: 1.0}


@dataclass(frozen=True)
class CanonicalOrientation:
    """Permutation and flips from an array's axes to the canonical axial orientation.

    ``axes[p]`` is the input axis that becomes canonical axis ``p``; ``flips[p]`` says
    whether canonical axis ``p`` is reversed after the permutation.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Input-ordered array → canonical view (no copy)."""
        out = np.transpose(array, self.axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis)
        return out

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Canonical array → the input's axis order (no copy); exact inverse of ``apply``."""
        out = array
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis)
        return np.transpose(out, np.argsort(self.axes))

    def canonical_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        return tuple(shape[a] for a in self.axes)  # type: ignore[return-value]

    def array_index(
        self, canonical_index: tuple[int, int, int], canonical_shape: tuple[int, int, int]
    ) -> tuple[int, int, int]:
        """The input array's (K, J, I) index of the voxel at ``canonical_index``."""
        result = [0, 0, 0]
        for position, value in enumerate(canonical_index):
            if self.flips[position]:
                value = canonical_shape[position] - 1 - value
            result[self.axes[position]] = int(value)
        return tuple(result)  # type: ignore[return-value]


def canonical_orientation(ijk_to_ras: np.ndarray) -> CanonicalOrientation:
    """Orientation of a volume array in Slicer's (K, J, I) order given its IJK-to-RAS matrix."""
    directions = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
    norms = np.linalg.norm(directions, axis=0)
    if np.any(norms == 0):
        raise ValueError("The volume's IJK-to-RAS matrix has a zero-length axis.")
    directions = directions / norms
    # Array axis a holds voxel axis 2 - a (arrays are indexed [k, j, i]).
    per_array_axis = [directions[:, 2 - a] for a in range(3)]
    # Assign each array axis to a distinct RAS axis, maximising alignment (robust to obliquity).
    best = max(
        itertools.permutations(range(3)),
        key=lambda ras: sum(abs(per_array_axis[a][ras[a]]) for a in range(3)),
    )
    axes = [0, 0, 0]
    flips = [False, False, False]
    for array_axis, ras_axis in enumerate(best):
        position = _CANONICAL_AXIS[ras_axis]
        axes[position] = array_axis
        sign = np.sign(per_array_axis[array_axis][ras_axis])
        flips[position] = bool(sign != _CANONICAL_SIGN[ras_axis])
    return CanonicalOrientation(tuple(axes), tuple(flips))  # type: ignore[arg-type]


def voxel_spacing(ijk_to_ras: np.ndarray) -> tuple[float, float, float]:
    """Spacing in mm along the (K, J, I) array axes."""
    norms = np.linalg.norm(np.asarray(ijk_to_ras, dtype=float)[:3, :3], axis=0)
    return float(norms[2]), float(norms[1]), float(norms[0])


def canonical_spacing(
    ijk_to_ras: np.ndarray, orientation: CanonicalOrientation
) -> tuple[float, float, float]:
    """Spacing in mm along the canonical (slice, row, column) axes."""
    spacing = voxel_spacing(ijk_to_ras)
    return tuple(spacing[a] for a in orientation.axes)  # type: ignore[return-value]


def coarse_ijk_to_ras(
    ijk_to_ras: np.ndarray, array_shape: tuple[int, ...], coarse_shape: tuple[int, ...]
) -> np.ndarray:
    """IJK-to-RAS of a grid covering the same box as ``array_shape`` with ``coarse_shape``
    voxels (both in (K, J, I) order), voxel centres placed as a pixel-centred resize puts them
    (``align_corners=False``): coarse index ``y`` sits at fine index ``(y + 0.5) n / m - 0.5``.
    Flips do not change this, so it holds for maps computed in the canonical orientation and
    brought back with :meth:`CanonicalOrientation.invert`."""
    scale = np.eye(4)
    for array_axis in range(3):
        n, m = float(array_shape[array_axis]), float(coarse_shape[array_axis])
        ijk_axis = 2 - array_axis
        scale[ijk_axis, ijk_axis] = n / m
        scale[ijk_axis, 3] = 0.5 * n / m - 0.5
    return np.asarray(ijk_to_ras, dtype=float) @ scale
