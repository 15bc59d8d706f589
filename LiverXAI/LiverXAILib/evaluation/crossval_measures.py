"""The cross-validation's per-case measures besides evaluation's, from one case's label arrays.

:func:`case_measures` adds to evaluation's per-case row (:class:`.evaluation.CaseEvaluation`)
what the cross-validation reports besides: the case's confusion matrix (for the LiTS global
Dice over all folds), true and predicted tumour volume, the volume of false tumour (predicted
lesions touching no true lesion; on a tumour-free case, all predicted tumour) and lesion
detection restricted to lesions of at least :data:`LARGE_LESION_MM` longest axial diameter
(the RECIST measurable size; diameter as :func:`.lesions.measure_lesions` measures it). The
detection criterion is evaluation's (:data:`.surface_metrics.DETECTION_CRITERION`): a large
true lesion is detected when any of its voxels is predicted tumour, a large predicted lesion
is a true positive when it touches any true tumour. The tables built from these measures are
:mod:`.crossval_report`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..constants import CLASS_NAMES, TUMOR
from ..segment.lesions import measure_lesions
from ..segment.masks import CONNECTIVITY_26, bounding_box
from .metrics import confusion_matrix

LARGE_LESION_MM = 10.0


def _lesions(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    """26-connected components, each one's longest axial diameter (mm), and their count."""
    components, count = ndimage.label(mask, structure=CONNECTIVITY_26)
    diameters = np.zeros(count + 1)
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        piece = (components[found] == index).astype(np.uint8) * TUMOR
        diameters[index] = measure_lesions(piece, spacing)[0].longest_axial_diameter_mm
    return components, diameters, count


def lesions_by_size(
    pred_labels: np.ndarray,
    true_labels: np.ndarray,
    spacing_mm: Sequence[float],
    min_diameter_mm: float = LARGE_LESION_MM,
) -> dict[str, Any]:
    """Detection of lesions of at least ``min_diameter_mm`` and the false tumour volume.

    Arrays are (slices, rows, columns) with ``spacing_mm`` in that order. Returns counts of
    large true lesions, of those detected, of large predicted lesions and of those touching
    true tumour; ``false_tumor_ml`` (predicted lesions of any size touching no true lesion)
    and ``true_lesion_sizes`` (diameter, volume and detection of every true lesion).
    """
    pred, true = np.asarray(pred_labels) == TUMOR, np.asarray(true_labels) == TUMOR
    result: dict[str, Any] = dict.fromkeys(
        ("true_large_lesions", "detected_large_lesions", "predicted_large_lesions"), 0
    )
    result.update(true_positive_large_lesions=0, false_tumor_ml=0.0, true_lesion_sizes=[])
    box = bounding_box(pred | true)
    if box is None:
        return result
    voxel_ml = math.prod(float(s) for s in spacing_mm) / 1000.0
    true_components, true_diameters, n_true = _lesions(true[box], spacing_mm)
    pred_components, pred_diameters, n_pred = _lesions(pred[box], spacing_mm)
    overlap = (true_components > 0) & (pred_components > 0)
    hit_true = np.zeros(n_true + 1, dtype=bool)
    hit_true[np.unique(true_components[overlap])] = True
    hit_pred = np.zeros(n_pred + 1, dtype=bool)
    hit_pred[np.unique(pred_components[overlap])] = True
    large_true = true_diameters[1:] >= min_diameter_mm
    large_pred = pred_diameters[1:] >= min_diameter_mm
    pred_sizes = np.bincount(pred_components.ravel(), minlength=n_pred + 1)[1:]
    true_sizes = np.bincount(true_components.ravel(), minlength=n_true + 1)[1:]
    result.update(
        true_large_lesions=int(large_true.sum()),
        detected_large_lesions=int((large_true & hit_true[1:]).sum()),
        predicted_large_lesions=int(large_pred.sum()),
        true_positive_large_lesions=int((large_pred & hit_pred[1:]).sum()),
        false_tumor_ml=float(pred_sizes[~hit_pred[1:]].sum() * voxel_ml),
        true_lesion_sizes=[
            {"diameter_mm": float(d), "volume_ml": float(v * voxel_ml), "detected": bool(h)}
            for d, v, h in zip(true_diameters[1:], true_sizes, hit_true[1:], strict=True)
        ],
    )
    return result


def case_measures(
    pred_labels: np.ndarray, true_labels: np.ndarray, spacing_mm: Sequence[float]
) -> dict[str, Any]:
    """The cross-validation's measures of one case besides evaluation's (module docstring)."""
    voxel_ml = math.prod(float(s) for s in spacing_mm) / 1000.0
    return {
        "confusion": confusion_matrix(pred_labels, true_labels, len(CLASS_NAMES)).tolist(),
        "true_tumor_ml": float(np.count_nonzero(true_labels == TUMOR) * voxel_ml),
        "predicted_tumor_ml": float(np.count_nonzero(pred_labels == TUMOR) * voxel_ml),
        "large_lesion_mm": LARGE_LESION_MM,
        **lesions_by_size(pred_labels, true_labels, spacing_mm),
    }
