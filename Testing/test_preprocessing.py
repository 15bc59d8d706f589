"""Canonical orientation is exact and independent of how the scan was stored."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import restored
from LiverXAILib.orientation import canonical_orientation, canonical_spacing
from LiverXAILib.preprocessing import SliceInputSpec, apply_window, neighbour_indices

LPS_IDENTITY = np.diag([-0.7, -0.7, 2.5, 1.0])  # LPS-identity scan as Slicer's IJK-to-RAS


def test_lps_identity_scan_is_already_canonical():
    orientation = canonical_orientation(LPS_IDENTITY)
    assert orientation.axes == (0, 1, 2) and orientation.flips == (False, False, False)
    assert canonical_spacing(LPS_IDENTITY, orientation) == pytest.approx((2.5, 0.7, 0.7))


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("flips", [(False, False, False), (True, False, True), (True, True, True)])
def test_every_storage_order_gives_the_same_canonical_array(permutation, flips):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, size=(5, 6, 7)).astype(np.int16)
    reference = canonical_orientation(LPS_IDENTITY).apply(array)
    stored, matrix = restored(array, LPS_IDENTITY, permutation, flips)
    orientation = canonical_orientation(matrix)
    np.testing.assert_array_equal(orientation.apply(stored), reference)
    np.testing.assert_array_equal(orientation.invert(orientation.apply(stored)), stored)
    assert canonical_spacing(matrix, orientation) == pytest.approx((2.5, 0.7, 0.7))


def test_slightly_oblique_scan_maps_to_nearest_axes():
    angle = np.radians(10)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    matrix = LPS_IDENTITY.copy()
    matrix[:3, :3] = rotation @ matrix[:3, :3]
    orientation = canonical_orientation(matrix)
    assert orientation.axes == (0, 1, 2) and orientation.flips == (False, False, False)


def test_window_scales_hounsfield_units_to_unit_range():
    values = np.array([-1000, -200, 50, 300, 2000], dtype=np.int16)
    np.testing.assert_allclose(apply_window(values, (-200, 300)), [0, 0, 0.5, 1, 1])
    assert torch.allclose(
        apply_window(torch.from_numpy(values), (-200, 300)), torch.tensor([0, 0, 0.5, 1, 1])
    )


def test_neighbours_repeat_edge_slices():
    assert neighbour_indices(0, 3, 10) == [0, 0, 1]
    assert neighbour_indices(9, 5, 10) == [7, 8, 9, 9, 9]
    assert neighbour_indices(4, 1, 10) == [4]


def test_batch_has_model_size_and_centre_slice_in_the_middle_channel():
    volume = np.stack([np.full((40, 50), 100 * i - 200, dtype=np.int16) for i in range(4)])
    batch = SliceInputSpec((-200, 300), (32, 32), num_slices=3).batch(volume, [1, 3])
    assert batch.shape == (2, 3, 32, 32)
    assert batch[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.2, 0.4])
    assert batch[1, :, 0, 0].tolist() == pytest.approx([0.4, 0.6, 0.6])
