"""Per-lesion volume, longest axial diameter and confidence."""

from __future__ import annotations

import numpy as np
import pytest
from LiverXAILib.segment.lesions import longest_in_plane_distance, measure_lesions


def test_two_lesions_largest_first_with_diameter_and_volume():
    labels = np.zeros((6, 64, 64), np.uint8)
    labels[:, 5:60, 5:60] = 1
    rows, columns = np.mgrid[:64, :64]
    disc = (rows - 30) ** 2 + (columns - 30) ** 2 <= 10**2  # 21 voxels across
    labels[1:4][:, disc] = 2
    labels[5, 50:52, 50:53] = 2  # a 2 x 3 lesion on one slice
    lesions = measure_lesions(labels, (2.0, 0.5, 0.5))
    assert [len(lesion.slices) for lesion in lesions] == [3, 1]
    big, small = lesions
    assert big.volume_ml == pytest.approx(3 * disc.sum() * 0.5 / 1000)
    assert big.longest_axial_diameter_mm == pytest.approx(10.0)  # 20 voxel steps x 0.5 mm
    assert big.slices == [1, 2, 3] and big.confidence is None
    assert small.longest_axial_diameter_mm == pytest.approx(np.hypot(1, 2) * 0.5)


def test_confidence_reads_the_uncertainty_on_the_coarser_map_grid():
    labels = np.zeros((2, 64, 64), np.uint8)
    labels[0, 0:16, 0:16] = 2  # the top-left quarter of the map grid below
    uncertainty = np.zeros((2, 4, 4), np.float32)  # a 4 x 4 grid over the 64 x 64 slices
    uncertainty[0, 0, 0] = 0.4
    (lesion,) = measure_lesions(labels, (1.0, 1.0, 1.0), uncertainty)
    assert lesion.confidence == pytest.approx(0.6)


def test_no_tumour_no_lesions_and_collinear_points():
    assert measure_lesions(np.ones((2, 8, 8), np.uint8), (1.0, 1.0, 1.0)) == []
    line = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])
    assert longest_in_plane_distance(line) == pytest.approx(3.0)


def test_diameter_equals_brute_force_over_every_pixel_of_irregular_lesions():
    """Only each row's end pixels are hull candidates; the answer is that of all pixels."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.standard_normal((4, 48, 48)), 1.5)
    labels = np.where(noise > 0.05, 2, 0).astype(np.uint8)
    spacing = (2.5, 0.8, 0.6)
    components, count = ndimage.label(labels == 2, structure=np.ones((3, 3, 3)))
    expected = []
    for index in range(1, count + 1):
        longest = 0.0
        for plane in components == index:
            points = np.argwhere(plane) * np.array(spacing[1:])
            if len(points):
                gaps = points[:, None] - points[None, :]
                longest = max(longest, float(np.sqrt((gaps**2).sum(-1)).max()))
        expected.append(((components == index).sum(), longest))
    expected = [d for _, d in sorted(expected, key=lambda e: e[0], reverse=True)]
    measured = [lesion.longest_axial_diameter_mm for lesion in measure_lesions(labels, spacing)]
    assert count > 3 and measured == pytest.approx(expected)
