"""Surface distance (HD95) and lesion-wise detection for 3D label volumes.

Both work in millimetres on arrays in any axis order, as long as ``spacing_mm`` matches it
(for canonical volumes: slice, row, column).

**HD95** (:func:`hausdorff95`) is the symmetric robust Hausdorff distance: the surface of a
mask is its voxels that have a background 6-neighbour (outside the volume counts as
background); for each surface voxel of one mask the Euclidean distance (in mm) to the
nearest surface voxel of the other is taken; HD95 is the larger of the two directed 95th
percentiles (as in MONAI's ``compute_hausdorff_distance`` and DeepMind's surface-distance
library). Conventions: both masks empty → 0.0; exactly one empty → NaN (undefined; reports
show "n/a" and average with a NaN-ignoring mean).

**Lesion detection** (:func:`lesion_detection`): lesions are the 3D connected components
(26-connectivity) of the tumour mask. A true lesion is *detected* when at least one of its
voxels is predicted tumour (criterion :data:`DETECTION_CRITERION`: any overlap); a predicted
lesion is a *true positive* when it overlaps a true lesion, otherwise a *false positive*.
Recall = detected / true lesions, precision = true-positive predictions / predicted lesions,
with the conventions of :mod:`.metrics`: 1.0 when there are neither true nor predicted
lesions, 0.0 for any other zero denominator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..segment.masks import CONNECTIVITY_26

DETECTION_CRITERION = (
    "any overlap: a true lesion (3D 26-connected component) counts as detected when at least "
    "one of its voxels is predicted tumour; a predicted lesion overlapping no true lesion is a "
    "false positive"
)
HD95_DEFINITION = (
    "symmetric 95th-percentile Hausdorff distance in mm: the larger of the two directed 95th "
    "percentiles of surface-to-surface distances; n/a when exactly one of prediction and "
    "truth is empty, 0 when both are"
)


def _spacing(spacing_mm: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != ndim or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"spacing_mm must be {ndim} positive numbers, got {tuple(spacing_mm)}")
    return spacing


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels grown by ``margin`` voxels (clipped), or None."""
    bounds = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        if present.size == 0:
            return None
        start = max(int(present[0]) - margin, 0)
        stop = min(int(present[-1]) + 1 + margin, mask.shape[axis])
        bounds.append(slice(start, stop))
    return tuple(bounds)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a background 6-neighbour; the array border counts as outside."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(pred_mask: np.ndarray, true_mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between two boolean masks.

    See the module docstring: 0.0 when both masks are empty, NaN when exactly one is.
    Distances are computed on the bounding box of both masks grown by one voxel.
    """
    pred_mask = np.asarray(pred_mask, dtype=bool)
    true_mask = np.asarray(true_mask, dtype=bool)
    if pred_mask.shape != true_mask.shape:
        raise ValueError(f"Mask shapes differ: {pred_mask.shape} and {true_mask.shape}")
    spacing = _spacing(spacing_mm, pred_mask.ndim)
    has_pred, has_true = bool(pred_mask.any()), bool(true_mask.any())
    if not has_pred and not has_true:
        return 0.0
    if has_pred != has_true:
        return float("nan")
    box = _box(pred_mask | true_mask, margin=1)
    surface_pred = _surface(pred_mask[box])
    surface_true = _surface(true_mask[box])
    # Every surface voxel lies in the box, so distances to the nearest one are exact there.
    to_true = ndimage.distance_transform_edt(~surface_true, sampling=spacing)[surface_pred]
    to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)[surface_true]
    return float(max(np.percentile(to_true, 95), np.percentile(to_pred, 95)))


def _ratio(numerator: int, denominator: int, both_empty: bool) -> float:
    if both_empty:
        return 1.0
    return numerator / denominator if denominator else 0.0


def lesion_detection(
    pred_labels: np.ndarray,
    true_labels: np.ndarray,
    spacing_mm: Sequence[float],
    tumor_label: int = 2,
) -> dict[str, object]:
    """Lesion-wise detection counts of one case (criterion: :data:`DETECTION_CRITERION`).

    Returns ``true_lesions``, ``predicted_lesions``, ``detected`` (true lesions found),
    ``missed``, ``true_positives`` (predicted lesions overlapping a true one),
    ``false_positives``, ``recall``, ``precision`` and the volumes in mL of the missed and
    of the false-positive lesions (``missed_ml``, ``false_positive_ml``, largest first).
    """
    pred = np.asarray(pred_labels) == tumor_label
    true = np.asarray(true_labels) == tumor_label
    if pred.shape != true.shape:
        raise ValueError(f"Label shapes differ: {pred.shape} and {true.shape}")
    spacing = _spacing(spacing_mm, pred.ndim)
    voxel_ml = math.prod(spacing) / 1000.0
    counts = {"true_lesions": 0, "predicted_lesions": 0, "detected": 0, "true_positives": 0}
    missed_ml: list[float] = []
    false_positive_ml: list[float] = []
    box = _box(pred | true, margin=0)
    if box is not None:
        true_components, n_true = ndimage.label(true[box], structure=CONNECTIVITY_26)
        pred_components, n_pred = ndimage.label(pred[box], structure=CONNECTIVITY_26)
        overlap = (true_components > 0) & (pred_components > 0)
        hit_true = np.zeros(n_true + 1, dtype=bool)
        hit_true[np.unique(true_components[overlap])] = True
        hit_pred = np.zeros(n_pred + 1, dtype=bool)
        hit_pred[np.unique(pred_components[overlap])] = True
        true_sizes = np.bincount(true_components.ravel(), minlength=n_true + 1)
        pred_sizes = np.bincount(pred_components.ravel(), minlength=n_pred + 1)
        missed_ml = [
            float(true_sizes[i]) * voxel_ml for i in range(1, n_true + 1) if not hit_true[i]
        ]
        false_positive_ml = [
            float(pred_sizes[i]) * voxel_ml for i in range(1, n_pred + 1) if not hit_pred[i]
        ]
        counts = {
            "true_lesions": int(n_true),
            "predicted_lesions": int(n_pred),
            "detected": int(hit_true[1:].sum()),
            "true_positives": int(hit_pred[1:].sum()),
        }
    both_empty = counts["true_lesions"] == 0 and counts["predicted_lesions"] == 0
    return {
        **counts,
        "missed": counts["true_lesions"] - counts["detected"],
        "false_positives": counts["predicted_lesions"] - counts["true_positives"],
        "recall": _ratio(counts["detected"], counts["true_lesions"], both_empty),
        "precision": _ratio(counts["true_positives"], counts["predicted_lesions"], both_empty),
        "missed_ml": sorted(missed_ml, reverse=True),
        "false_positive_ml": sorted(false_positive_ml, reverse=True),
    }


def detection_rates(
    true_lesions: int, predicted_lesions: int, detected: int, true_positives: int
) -> tuple[float, float]:
    """Recall and precision from lesion counts (e.g. summed over cases), same conventions."""
    both_empty = true_lesions == 0 and predicted_lesions == 0
    return (
        _ratio(detected, true_lesions, both_empty),
        _ratio(true_positives, predicted_lesions, both_empty),
    )
