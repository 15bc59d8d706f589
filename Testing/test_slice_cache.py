"""The slice cache extracts through the inference path once, then streams from disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLE_SMALL_CT, require
from LiverXAILib.segment.preprocessing import SliceInputSpec
from LiverXAILib.training.augmentation import build_augmentation, parse_augmentations
from LiverXAILib.training.cases import Case, load_canonical_case
from LiverXAILib.training.slice_cache import SliceCache
from LiverXAILib.training.slice_dataset import SliceDataset
from test_data import SMALL_LIVER

SPEC = SliceInputSpec((-200.0, 300.0), (64, 64), 3)


@pytest.fixture
def case() -> Case:
    return Case(require(SAMPLE_SMALL_CT), require(SMALL_LIVER), "small")


def test_cached_slices_equal_the_inference_batch(tmp_path, case):
    entry, reused = SliceCache(tmp_path, SPEC, keep_empty_fraction=1.0).ensure(case)
    assert not reused
    canonical = load_canonical_case(case)
    assert entry.count == canonical.image.shape[0] == len(entry.slice_indices)
    inputs, targets = entry.open()
    assert inputs.dtype == np.float16 and inputs.shape == (30, 3, 64, 64)
    expected = SPEC.batch(canonical.image, list(entry.slice_indices)).numpy()
    np.testing.assert_allclose(inputs, expected, atol=1e-3)  # float16 storage
    assert targets.dtype == np.uint8 and set(np.unique(targets)) <= {0, 1}
    liver_slices = canonical.labels.reshape(30, -1).max(axis=1) > 0
    assert (targets.reshape(30, -1).max(axis=1) > 0).tolist() == liver_slices.tolist()


def test_second_lookup_reuses_and_settings_change_the_key(tmp_path, case):
    cache = SliceCache(tmp_path, SPEC, keep_empty_fraction=0.0)
    first, _ = cache.ensure(case)
    again, reused = cache.ensure(case)
    assert reused and again == first
    other = SliceCache(tmp_path, SliceInputSpec((-200.0, 300.0), (64, 64), 1), 0.0)
    assert other.key(case) != cache.key(case)
    assert other.lookup(case) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_keep_empty_fraction_drops_slices_without_liver(tmp_path, case):
    labels = load_canonical_case(case).labels
    with_liver = int((labels.reshape(labels.shape[0], -1).max(axis=1) > 0).sum())
    entry, _ = SliceCache(tmp_path, SPEC, keep_empty_fraction=0.0).ensure(case)
    assert entry.count == with_liver


def test_dataset_streams_items_and_augments(tmp_path, case):
    entry, _ = SliceCache(tmp_path, SPEC, keep_empty_fraction=1.0).ensure(case)
    plain = SliceDataset([entry, entry])
    assert len(plain) == 60
    image, label = plain[45]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert label.dtype == torch.int64 and label.shape == (64, 64)
    torch.testing.assert_close(image, plain[15][0])
    with pytest.raises(IndexError):
        plain[60]
    augmented = SliceDataset([entry], ("rotate", "zoom", "noise", "intensity"), seed=1)
    changed = [not torch.equal(augmented[i][0], plain[i][0]) for i in range(30)]
    assert any(changed)
    for i in range(30):
        image, label = augmented[i]
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert set(label.unique().tolist()) <= {0, 1, 2}


def test_flip_mirrors_image_and_label_together():
    transform = build_augmentation(["flip"], seed=0)
    image = torch.zeros(1, 8, 8)
    image[0, :, :2] = 1.0
    label = (image[0] > 0).long()
    flipped = [transform({"image": image, "label": label[None].float()}) for _ in range(20)]
    outcomes = {bool(out["image"][0, 0, -1] == 1.0) for out in flipped}
    assert outcomes == {True, False}  # applied with probability 0.5
    for out in flipped:
        assert torch.equal(out["label"][0].long(), (out["image"][0] > 0).long())


def test_augmentation_names():
    assert parse_augmentations("none") == ()
    assert parse_augmentations("rotate, zoom,rotate") == ("rotate", "zoom")
    with pytest.raises(ValueError, match="unknown augmentation shear.*rotate"):
        parse_augmentations("shear")
    assert build_augmentation([]) is None
