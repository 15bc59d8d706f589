"""Canonical orientation is exact and independent of how the scan was stored."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import restored
from LiverXAILib.segment.orientation import canonical_orientation, canonical_spacing
from LiverXAILib.segment.preprocessing import SliceInputSpec, apply_window, neighbour_indices

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


# --- 2.5D neighbours at a fixed distance in mm (SliceInputSpec.slice_step_mm) ----------------


def ramp(depth: int, spacing_mm: float, rows: int = 24, columns: int = 20) -> np.ndarray:
    """A CT whose HU change linearly along z (mm), with an in-plane pattern: ``-500 + 6 z``."""
    z = np.arange(depth, dtype=np.float64)[:, None, None] * spacing_mm
    pattern = np.add.outer(np.arange(rows) * 3.0, np.arange(columns) * -2.0)[None]
    return (-500.0 + 6.0 * z + pattern).astype(np.float32)


def test_a_slice_step_interpolates_exactly_between_slices_of_a_linear_ramp():
    volume = ramp(12, 2.0)
    spec = SliceInputSpec((-1000.0, 1000.0), (24, 20), num_slices=3, slice_step_mm=3.0)
    stacks = spec.stacks(volume, [5], slice_spacing_mm=2.0)
    assert stacks.shape == (1, 3, 24, 20) and stacks.dtype == np.float32
    # Slice 5 lies at 10 mm: the channels are the CT at 7, 10 and 13 mm (positions 3.5, 5, 6.5).
    for channel, z_mm in enumerate((7.0, 10.0, 13.0)):
        expected = volume[0] + 6.0 * z_mm
        np.testing.assert_allclose(stacks[0, channel], expected, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(stacks[0, 1], volume[5])  # the centre is the slice itself
    batch = spec.batch(volume, [5], slice_spacing_mm=2.0)
    np.testing.assert_allclose(batch[0, 0, 0, 0], (-500 + 42 + 1000) / 2000, atol=1e-6)


def test_a_step_equal_to_the_spacing_is_the_stack_by_index_bit_for_bit():
    rng = np.random.default_rng(1)
    volume = rng.integers(-1000, 1500, size=(9, 40, 36)).astype(np.int16)
    by_index = SliceInputSpec((-200.0, 300.0), (32, 32), num_slices=5)
    by_step = SliceInputSpec((-200.0, 300.0), (32, 32), num_slices=5, slice_step_mm=2.5)
    indices = list(range(9))
    expected = by_index.batch(volume, indices)
    assert torch.equal(by_step.batch(volume, indices, slice_spacing_mm=2.5), expected)
    assert torch.equal(by_index.batch(volume, indices, slice_spacing_mm=0.8), expected)


def test_a_step_clamps_to_the_volume_ends():
    volume = ramp(6, 2.0)
    spec = SliceInputSpec((-1000.0, 1000.0), (24, 20), num_slices=5, slice_step_mm=3.0)
    stacks = spec.stacks(volume, [0, 5], slice_spacing_mm=2.0)
    # Slice 0: -6 and -3 mm lie before the first slice, which is repeated; +3, +6 mm inside.
    np.testing.assert_array_equal(stacks[0, :3], np.stack([volume[0]] * 3))
    np.testing.assert_allclose(stacks[0, 3], volume[0] + 18.0, atol=1e-3)
    np.testing.assert_array_equal(stacks[0, 4], volume[3])
    # Slice 5 (10 mm, the last): 4 and 7 mm inside, 13 and 16 mm beyond the end.
    np.testing.assert_array_equal(stacks[1, 0], volume[2])
    np.testing.assert_allclose(stacks[1, 1], volume[0] + 42.0, atol=1e-3)
    np.testing.assert_array_equal(stacks[1, 2:], np.stack([volume[5]] * 3))


def test_the_same_anatomy_at_5_mm_and_1_6_mm_gives_the_same_input():
    coarse, fine = ramp(20, 5.0), ramp(60, 1.6)
    spec = SliceInputSpec((-600.0, 400.0), (24, 20), num_slices=5, slice_step_mm=4.0)
    # 40 mm is slice 8 at 5 mm and slice 25 at 1.6 mm; 80 mm is slice 16 and 50.
    at_5 = spec.batch(coarse, [8, 16], slice_spacing_mm=5.0)
    at_1_6 = spec.batch(fine, [25, 50], slice_spacing_mm=1.6)
    torch.testing.assert_close(at_5, at_1_6, rtol=0, atol=1e-5)
    channels = at_5[0, :, 0, 0].tolist()  # HU -500 + 6 z at z = 32..48 mm, windowed
    assert channels == pytest.approx([(100 + 6 * z) / 1000 for z in (32, 36, 40, 44, 48)])
    by_index = SliceInputSpec((-600.0, 400.0), (24, 20), num_slices=5)
    assert not torch.allclose(by_index.batch(coarse, [8]), by_index.batch(fine, [25]))


def test_a_step_without_the_volume_spacing_is_refused():
    spec = SliceInputSpec((-200.0, 300.0), (16, 16), num_slices=3, slice_step_mm=3.0)
    volume = ramp(5, 2.0)
    with pytest.raises(ValueError, match="3 mm apart: the volume's slice spacing"):
        spec.batch(volume, [1])
    with pytest.raises(ValueError, match="positive number of mm"):
        spec.batch(volume, [1], slice_spacing_mm=0.0)
    one = SliceInputSpec((-200.0, 300.0), (16, 16), num_slices=1, slice_step_mm=3.0)
    assert torch.equal(
        one.batch(volume, [1]), SliceInputSpec((-200, 300), (16, 16)).batch(volume, [1])
    )
