"""The ``lesion`` augmentation redraws the tumour's contrast to its liver, and nothing else."""

from __future__ import annotations

import pytest
import torch
from LiverXAILib.constants import DEFAULT_HU_WINDOW
from LiverXAILib.training.augmentation import augment_slice, build_augmentation
from LiverXAILib.training.lesion_contrast import RandLesionContrastd

HU = 1.0 / (DEFAULT_HU_WINDOW[1] - DEFAULT_HU_WINDOW[0])  # one HU in the image's units


def _slice_with_a_hypodense_lesion() -> tuple[torch.Tensor, torch.Tensor]:
    """Fat 0.1, liver 0.6 (≈100 HU), a 16-pixel lesion 30 HU darker, with texture."""
    generator = torch.Generator().manual_seed(0)
    image = torch.full((1, 64, 64), 0.1)
    image[0, 8:56, 8:56] = 0.6
    image[0, 24:40, 24:40] = 0.6 - 30 * HU + 0.01 * torch.randn(16, 16, generator=generator)
    label = torch.zeros(64, 64, dtype=torch.long)
    label[8:56, 8:56] = 1
    label[24:40, 24:40] = 2
    return image, label


def _contrast_hu(image: torch.Tensor, label: torch.Tensor) -> float:
    """Mean of the lesion's core minus the liver far from it, in HU."""
    core = image[0, 28:36, 28:36].mean()
    liver = image[0, 10:20, 10:54].mean()
    return float(core - liver) / HU


def test_the_lesion_gets_a_new_visible_contrast_of_either_sign_and_keeps_its_texture():
    image, label = _slice_with_a_hypodense_lesion()
    transform = build_augmentation(["lesion"], seed=4)
    contrasts, unchanged = [], 0
    for _ in range(60):
        augmented, same_label = augment_slice(transform, image, label)
        assert torch.equal(same_label, label)
        # the liver away from the lesion, and everything outside the liver, stay as they were
        assert torch.equal(augmented[0, :20], image[0, :20])
        assert torch.equal(augmented[0, :, :20], image[0, :, :20])
        if torch.equal(augmented, image):
            unchanged += 1
            continue
        contrasts.append(_contrast_hu(augmented, label))
        texture = augmented[0, 28:36, 28:36] - augmented[0, 28:36, 28:36].mean()
        original = image[0, 28:36, 28:36] - image[0, 28:36, 28:36].mean()
        assert torch.allclose(texture, original, atol=1e-5)
    assert 10 < unchanged < 50  # probability 0.5
    assert all(14 <= abs(c) <= 61 for c in contrasts)
    assert any(c > 0 for c in contrasts) and any(c < 0 for c in contrasts)


def test_a_slice_without_tumour_or_without_liver_is_left_alone():
    image, label = _slice_with_a_hypodense_lesion()
    transform = RandLesionContrastd(prob=1.0)
    no_tumour = label.clone()
    no_tumour[no_tumour == 2] = 1
    only_tumour = (label == 2).long() * 2
    for labels in (no_tumour, only_tumour):
        out = transform({"image": image, "label": labels[None].float()})
        assert torch.equal(out["image"], image)


def test_the_contrast_range_is_checked():
    with pytest.raises(ValueError, match="min_hu"):
        RandLesionContrastd(min_hu=0.0)
    with pytest.raises(ValueError, match="min_hu"):
        RandLesionContrastd(min_hu=50.0, max_hu=20.0)
