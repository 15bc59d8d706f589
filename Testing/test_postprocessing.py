"""Behaviour of the 3D label clean-up and the volume statistics."""

import numpy as np
import pytest
from LiverXAILib.segment.postprocessing import (
    LabelStatistics,
    clean_labels,
    drop_small_tumors,
    label_statistics,
    label_warnings,
)

SPACING = (2.5, 1.0, 0.5)  # mm along axes (slices, rows, columns): anisotropic on purpose


def _synthetic_case() -> np.ndarray:
    """A liver box with a hole and a tumour, a small spurious liver blob, a far-away tumour."""
    labels = np.zeros((20, 40, 60), dtype=np.uint8)
    labels[2:14, 5:30, 5:45] = 1  # the liver: 12 x 25 x 40 voxels
    labels[6:9, 10:14, 10:16] = 2  # a tumour inside the liver
    labels[7:10, 17:21, 30:35] = 0  # a hole enclosed in 3D
    labels[16:18, 34:37, 50:53] = 1  # a spurious liver blob, disconnected
    labels[17, 35, 55:58] = 2  # "tumour" near the spurious blob, far from the liver
    labels[0, 0, 0] = 2  # a lone tumour voxel in a corner
    return labels


def test_clean_labels_removes_spurious_parts_and_fills_holes() -> None:
    labels = _synthetic_case()
    cleaned = clean_labels(labels, SPACING)

    assert cleaned.dtype == np.uint8 and cleaned.shape == labels.shape
    assert np.all(cleaned[16:18, 34:37, 50:53] == 0), "spurious liver blob kept"
    assert np.all(cleaned[17, 35, 55:58] == 0), "tumour far from the liver kept"
    assert cleaned[0, 0, 0] == 0, "corner tumour kept"
    assert np.all(cleaned[6:9, 10:14, 10:16] == 2), "tumour inside the liver lost"
    assert np.all(cleaned[7:10, 17:21, 30:35] == 1), "hole not filled with liver"
    expected = np.zeros_like(labels)
    expected[2:14, 5:30, 5:45] = 1
    expected[6:9, 10:14, 10:16] = 2
    np.testing.assert_array_equal(cleaned, expected)


def test_clean_labels_does_not_modify_its_input() -> None:
    labels = _synthetic_case()
    before = labels.copy()
    labels.setflags(write=False)  # any write attempt would raise
    clean_labels(labels, SPACING)
    np.testing.assert_array_equal(labels, before)


def test_axial_holes_are_filled_slice_by_slice() -> None:
    labels = np.zeros((6, 20, 20), dtype=np.uint8)
    labels[1:5, 4:16, 4:16] = 1
    labels[:, 8:11, 8:11] = 0  # a tunnel through every slice: open in 3D, closed per slice
    cleaned = clean_labels(labels, (1.0, 1.0, 1.0))
    assert np.all(cleaned[1:5, 8:11, 8:11] == 1)
    assert np.all(cleaned[0] == 0) and np.all(cleaned[5] == 0)


def test_tumour_margin_is_measured_in_millimetres() -> None:
    labels = np.zeros((30, 10, 10), dtype=np.uint8)
    labels[5:15, 2:8, 2:8] = 1
    labels[16, 4, 4] = 2  # 2 slices past the liver's last slice (index 14)
    labels[17, 5, 5] = 2  # 3 slices past
    # 2 slices x 2.5 mm = 5.0 mm (kept at a 5 mm margin), 3 slices = 7.5 mm (removed).
    cleaned = clean_labels(labels, (2.5, 1.0, 1.0), tumor_margin_mm=5.0)
    assert cleaned[16, 4, 4] == 2
    assert cleaned[17, 5, 5] == 0
    # With 1 mm slices both lie within 5 mm; with no margin neither is kept.
    assert clean_labels(labels, (1.0, 1.0, 1.0))[17, 5, 5] == 2
    assert np.count_nonzero(clean_labels(labels, (1.0, 1.0, 1.0), 0.0) == 2) == 0


def test_no_liver_gives_all_zeros() -> None:
    labels = np.zeros((4, 8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(clean_labels(labels, SPACING), labels)
    stats = label_statistics(clean_labels(labels, SPACING), SPACING)
    assert stats == LabelStatistics(0.0, 0.0, 0.0, 0, [], [])


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="3D"):
        clean_labels(np.zeros((8, 8), dtype=np.uint8), (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        clean_labels(np.zeros((2, 8, 8), dtype=np.uint8), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="margin"):
        clean_labels(np.zeros((2, 8, 8), dtype=np.uint8), SPACING, tumor_margin_mm=-1.0)


def test_label_statistics_volumes_in_millilitres() -> None:
    labels = np.zeros((10, 20, 20), dtype=np.uint8)
    labels[1:9, 2:18, 2:18] = 1  # 8 * 16 * 16 = 2048 organ voxels
    labels[2:4, 3:6, 3:7] = 2  # tumour A: 2 * 3 * 4 = 24 voxels
    labels[6, 10:12, 10:15] = 2  # tumour B: 1 * 2 * 5 = 10 voxels
    labels[7, 13, 16] = 2  # tumour C: 1 voxel, two rows away from B, so separate
    # Voxel volume 2.5 * 1.0 * 0.5 = 1.25 mm^3 = 0.00125 mL.
    stats = label_statistics(labels, SPACING)
    assert stats.liver_ml == pytest.approx(2048 * 0.00125)
    assert stats.tumor_ml == pytest.approx(35 * 0.00125)
    assert stats.liver_parenchyma_ml == pytest.approx((2048 - 35) * 0.00125)
    assert stats.tumor_count == 3
    assert stats.tumor_volumes_ml == pytest.approx([0.03, 0.0125, 0.00125])
    assert stats.tumor_slices == [2, 3, 6, 7]


def test_tumour_count_uses_26_connectivity() -> None:
    labels = np.zeros((5, 5, 5), dtype=np.uint8)
    labels[1, 1, 1] = 2
    labels[2, 2, 2] = 2  # touches the first only at a corner: same tumour
    labels[4, 4, 4] = 2  # separate
    stats = label_statistics(labels, (1.0, 1.0, 1.0))
    assert stats.tumor_count == 2
    assert stats.tumor_volumes_ml == pytest.approx([0.002, 0.001])
    assert stats.liver_ml == pytest.approx(0.003)


def test_matches_a_plain_scipy_reference_on_random_blobs() -> None:
    """The box-cropped, per-component implementation equals the straightforward recipe."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    noise = ndimage.gaussian_filter(rng.standard_normal((24, 40, 40)), 2.0)
    labels = (noise > 0.02).astype(np.uint8) + (noise > 0.12).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.01] = 2  # scattered tumour voxels, near and far
    spacing = (3.0, 0.7, 0.7)

    organ = labels >= 1
    components, _ = ndimage.label(organ, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    organ = components == sizes.argmax()
    organ = ndimage.binary_fill_holes(organ)
    axial = np.zeros((3, 3, 3), dtype=bool)
    axial[1] = ndimage.generate_binary_structure(2, 1)
    organ = ndimage.binary_fill_holes(organ, structure=axial)
    distance = ndimage.distance_transform_edt(~organ, sampling=spacing)
    expected = organ.astype(np.uint8)
    expected[(labels == 2) & (distance <= 2.0)] = 2

    np.testing.assert_array_equal(clean_labels(labels, spacing, tumor_margin_mm=2.0), expected)


def test_warnings_for_a_cut_off_or_implausible_liver() -> None:
    """Real volumes: a 1.6 L liver inside the scan gives no warning; the same liver cut by
    the first slice is a lower bound; 10 mL or 8 L are implausible; none at all is said."""
    spacing = (2.0, 1.0, 1.0)
    labels = np.zeros((60, 120, 120), dtype=np.uint8)
    labels[5:55, 10:110, 20:100] = 1  # 50 * 100 * 80 * 2 mm^3 = 800 mL
    labels = np.concatenate([labels, labels], axis=2)  # 1600 mL
    inside = label_warnings(labels, label_statistics(labels, spacing))
    assert inside == []
    cut = labels.copy()
    cut[0] = cut[5]
    warnings = label_warnings(cut, label_statistics(cut, spacing))
    assert len(warnings) == 1 and "lower bound" in warnings[0] and "1632 mL" in warnings[0]
    small = np.zeros_like(labels)
    small[20:30, 50:60, 50:100] = 1  # 10 mL
    assert "implausible" in label_warnings(small, label_statistics(small, spacing))[0]
    big = label_statistics(labels, (10.0, 1.0, 1.0))  # 8000 mL
    assert "8000 mL is implausible" in label_warnings(labels, big)[0]
    assert (
        "No liver"
        in label_warnings(np.zeros_like(labels), label_statistics(np.zeros_like(labels), spacing))[
            0
        ]
    )


def test_drop_small_tumors_turns_small_components_into_liver() -> None:
    labels = np.zeros((10, 30, 30), dtype=np.uint8)
    labels[1:9, 2:28, 2:28] = 1
    labels[2:6, 4:12, 4:12] = 2  # 4 x 8 x 8 voxels x 1.25 mm3 = 0.32 mL
    labels[7, 20, 20] = 2  # one voxel: 0.00125 mL
    labels[7, 21, 21] = 2  # touches it diagonally: the same 26-connected component
    before = labels.copy()
    kept = drop_small_tumors(labels, SPACING, 0.01)
    np.testing.assert_array_equal(labels, before)  # the input is not modified
    assert (kept[2:6, 4:12, 4:12] == 2).all()
    assert kept[7, 20, 20] == kept[7, 21, 21] == 1  # liver now, the organ keeps its voxels
    assert np.count_nonzero(kept) == np.count_nonzero(labels)
    assert not (drop_small_tumors(labels, SPACING, 0.5) == 2).any()  # 0.32 mL < 0.5 mL
    np.testing.assert_array_equal(drop_small_tumors(labels, SPACING, 0.0), labels)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="min_tumor_ml"):
            drop_small_tumors(labels, SPACING, bad)
