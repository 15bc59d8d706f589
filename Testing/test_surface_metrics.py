"""HD95 and lesion detection of the model evaluation, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from LiverXAILib.evaluation.surface_metrics import hausdorff95, lesion_detection

# --- HD95 --------------------------------------------------------------------------------------


def cube(shape, start, size=4):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


@pytest.mark.parametrize(
    ("axis", "spacing", "expected_mm"),
    [(0, (2.0, 1.0, 0.5), 20.0), (2, (2.0, 1.0, 0.5), 5.0), (1, (1.0, 0.8, 1.0), 8.0)],
)
def test_hd95_of_two_cubes_ten_voxels_apart(axis, spacing, expected_mm):
    # 4^3 cubes, B = A moved 10 voxels along `axis`. Each surface voxel of A is nearest to the
    # voxel with the same other coordinates on B's near face: 7, 8, 9 or 10 voxels away
    # (16, 12, 12 and 16 of A's 56 surface voxels), so the 95th percentile is 10 voxels.
    shape = (20, 20, 20)
    start_b = [2, 2, 2]
    start_b[axis] += 10
    a, b = cube(shape, (2, 2, 2)), cube(shape, start_b)
    assert hausdorff95(a, b, spacing) == pytest.approx(expected_mm)
    assert hausdorff95(b, a, spacing) == pytest.approx(expected_mm)


def test_hd95_of_a_slab_shifted_two_slices_is_two_slice_spacings():
    # Slabs 3 x 20 x 20 on slices 0-2 and 2-4: A's surface is its two faces (400 voxels each,
    # 0 and 2 slices from B's surface) and the rim of slice 1 (76 voxels, 1 slice away).
    a = np.zeros((8, 24, 24), dtype=bool)
    b = np.zeros_like(a)
    a[0:3, 2:22, 2:22] = True
    b[2:5, 2:22, 2:22] = True
    assert hausdorff95(a, b, (2.5, 0.7, 0.7)) == pytest.approx(5.0)


def brute_force_hd95(a, b, spacing):
    def surface_points(mask):
        padded = np.pad(mask, 1)
        inner = np.ones_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                inner &= np.roll(padded, step, axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(mask & ~inner) * np.asarray(spacing)

    pa, pb = surface_points(a), surface_points(b)
    distances = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95))


def test_hd95_of_a_sphere_shifted_by_two_voxels_with_anisotropic_spacing():
    spacing = (3.0, 0.8, 0.8)
    z, y, x = np.ogrid[:16, :40, :40]
    radius_mm = 10.0
    a = ((z - 6) * 3.0) ** 2 + ((y - 20) * 0.8) ** 2 + ((x - 20) * 0.8) ** 2 <= radius_mm**2
    b = np.roll(a, 2, axis=0)  # 2 slices = 6 mm along the slice axis
    value = hausdorff95(a, b, spacing)
    assert value == pytest.approx(brute_force_hd95(a, b, spacing))
    assert 0 < value <= 6.0 + 1e-9  # no surface point is further than the shift
    assert hausdorff95(a, a, spacing) == 0.0


def test_hd95_empty_conventions_and_border_masks():
    empty = np.zeros((5, 6, 7), dtype=bool)
    full = np.ones_like(empty)  # touches every border: the border counts as outside
    assert hausdorff95(empty, empty, (1, 1, 1)) == 0.0
    assert math.isnan(hausdorff95(full, empty, (1, 1, 1)))
    assert math.isnan(hausdorff95(empty, full, (1, 1, 1)))
    assert hausdorff95(full, full, (1, 2, 3)) == 0.0
    with pytest.raises(ValueError):
        hausdorff95(empty, empty[:-1], (1, 1, 1))
    with pytest.raises(ValueError):
        hausdorff95(empty, empty, (1, 0, 1))


# --- lesion detection --------------------------------------------------------------------------


def test_lesion_detection_one_found_one_missed_one_false_positive():
    truth = np.zeros((10, 30, 30), dtype=np.uint8)
    prediction = np.zeros_like(truth)
    truth[2:5, 2:6, 2:6] = 2  # lesion A, 48 voxels
    truth[2:4, 20:23, 20:23] = 2  # lesion B, 18 voxels: missed
    prediction[3:6, 4:8, 4:8] = 2  # overlaps A by 2 x 2 x 2 voxels: A is detected
    prediction[7:9, 2:4, 20:22] = 2  # false positive, 8 voxels
    truth[truth == 0] = 1  # liver around everything changes nothing
    spacing = (2.0, 0.5, 0.5)  # 0.5 mm^3 per voxel
    result = lesion_detection(prediction, truth, spacing)
    assert result["true_lesions"] == 2
    assert result["predicted_lesions"] == 2
    assert result["detected"] == 1 and result["missed"] == 1
    assert result["true_positives"] == 1 and result["false_positives"] == 1
    assert result["recall"] == 0.5 and result["precision"] == 0.5
    assert result["missed_ml"] == pytest.approx([18 * 0.5 / 1000])
    assert result["false_positive_ml"] == pytest.approx([8 * 0.5 / 1000])


def test_lesion_components_are_26_connected_and_one_prediction_can_find_two():
    truth = np.zeros((6, 6, 6), dtype=np.uint8)
    truth[1, 1, 1] = truth[2, 2, 2] = 2  # corner neighbours: one lesion
    truth[1, 4, 4] = 2  # a second lesion
    prediction = np.zeros_like(truth)
    prediction[1, 1:5, 1:5] = 2  # one predicted lesion covering both
    result = lesion_detection(prediction, truth, (1, 1, 1))
    assert result["true_lesions"] == 2 and result["predicted_lesions"] == 1
    assert result["detected"] == 2 and result["true_positives"] == 1
    assert result["recall"] == 1.0 and result["precision"] == 1.0


def test_lesion_detection_zero_denominators():
    nothing = np.zeros((4, 4, 4), dtype=np.uint8)
    lesion = nothing.copy()
    lesion[1:3, 1:3, 1:3] = 2
    both_empty = lesion_detection(nothing, nothing, (1, 1, 1))
    assert both_empty["recall"] == 1.0 and both_empty["precision"] == 1.0
    missed = lesion_detection(nothing, lesion, (1, 1, 1))
    assert (missed["recall"], missed["precision"], missed["missed"]) == (0.0, 0.0, 1)
    invented = lesion_detection(lesion, nothing, (1, 1, 1))
    assert (invented["recall"], invented["precision"], invented["false_positives"]) == (0, 0, 1)
