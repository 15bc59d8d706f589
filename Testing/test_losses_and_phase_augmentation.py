"""The training losses and the contrast/gamma augmentations, on small real tensors."""

from __future__ import annotations

import pytest
import torch
from LiverXAILib.training.augmentation import augment_slice, build_augmentation
from LiverXAILib.training.losses import LOSSES, build_loss

WEIGHTS = (1.0, 1.0, 3.0)


def _labels() -> torch.Tensor:
    """Two 32² slices: background, a liver square, a tumour inside it."""
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 6:26, 6:26] = 1
    labels[:, 12:18, 12:18] = 2
    return labels


def _logits_for(labels: torch.Tensor, confidence: float = 8.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * confidence


@pytest.mark.parametrize("kind", LOSSES)
def test_each_loss_is_near_zero_when_right_and_larger_when_wrong(kind):
    labels = _labels()
    loss = build_loss(kind, WEIGHTS)
    right = loss(_logits_for(labels), labels)
    missed = labels.clone()
    missed[missed == 2] = 1  # the tumour called liver
    wrong = loss(_logits_for(missed), labels)
    assert float(right) < 0.01
    assert float(wrong) > float(right) + 0.1
    logits = torch.randn(2, 3, 32, 32, requires_grad=True)
    loss(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) > 0


def test_tversky_makes_a_missed_tumour_cost_more_than_a_false_one():
    labels = _labels()
    loss = build_loss("tversky", (1.0, 1.0, 1.0))
    missed = labels.clone()
    missed[:, 12:18, 12:15] = 1  # half the tumour missed (18 pixels per slice)
    extra = labels.clone()
    extra[:, 8:11, 8:14] = 2  # 18 false tumour pixels per slice in the liver
    # the same number of wrong pixels, once as missed tumour and once as false tumour
    cost_missed = float(loss(_logits_for(missed), labels))
    cost_extra = float(loss(_logits_for(extra), labels))
    dice = build_loss("dicece", (1.0, 1.0, 1.0))
    dice_missed = float(dice(_logits_for(missed), labels))
    dice_extra = float(dice(_logits_for(extra), labels))
    assert cost_missed > cost_extra
    assert cost_missed / cost_extra > 1.2 * (dice_missed / dice_extra)


def test_focal_term_discounts_confident_pixels():
    """Dice + focal on a half-confident right answer costs less than Dice + CE does."""
    labels = _labels()
    unsure = _logits_for(labels, confidence=1.0)
    focal = float(build_loss("dicefocal", WEIGHTS)(unsure, labels))
    dice_ce = float(build_loss("dicece", WEIGHTS)(unsure, labels))
    assert 0.0 < focal < dice_ce


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="dicece, tversky, dicefocal"):
        build_loss("focal", WEIGHTS)


def _ct_like_slice() -> tuple[torch.Tensor, torch.Tensor]:
    """A windowed slice: fat 0.1, liver 0.6, a darker lesion 0.45, values in [0, 1]."""
    image = torch.full((1, 64, 64), 0.1)
    image[0, 10:50, 10:50] = 0.6
    image[0, 25:35, 25:35] = 0.45
    label = torch.zeros(64, 64, dtype=torch.long)
    label[10:50, 10:50] = 1
    label[25:35, 25:35] = 2
    return image, label


@pytest.mark.parametrize("name", ["contrast", "gamma"])
def test_phase_augmentations_change_intensities_only(name):
    image, label = _ct_like_slice()
    transform = build_augmentation([name], seed=3)
    outputs = [augment_slice(transform, image, label) for _ in range(40)]
    changed = 0
    for augmented, same_label in outputs:
        assert torch.equal(same_label, label)
        assert 0.0 <= float(augmented.min()) and float(augmented.max()) <= 1.0
        fat, liver, lesion = (float(augmented[0, y, x]) for y, x in ((2, 2), (15, 15), (30, 30)))
        assert fat <= lesion <= liver  # the order of tissues is kept
        changed += not torch.equal(augmented, image)
    assert 5 < changed < 40  # applied at random, not always


def test_contrast_moves_the_liver_further_than_intensity_does():
    image, label = _ct_like_slice()

    def spread(name: str) -> float:
        transform = build_augmentation([name], seed=5)
        values = [float(augment_slice(transform, image, label)[0][0, 15, 15]) for _ in range(200)]
        return max(values) - min(values)

    assert spread("contrast") > 1.8 * spread("intensity")


def _lesion_position(image: torch.Tensor) -> float:
    """Where the lesion lies between fat (0) and liver (1): unchanged by any linear change."""
    fat, liver, lesion = (float(image[0, y, x]) for y, x in ((2, 2), (15, 15), (30, 30)))
    return round((lesion - fat) / (liver - fat), 3)


def test_gamma_changes_the_lesion_contrast_and_a_linear_change_does_not():
    image, label = _ct_like_slice()
    gamma, linear = build_augmentation(["gamma"], seed=7), build_augmentation(["intensity"], seed=7)
    by_gamma = {_lesion_position(augment_slice(gamma, image, label)[0]) for _ in range(40)}
    by_linear = {_lesion_position(augment_slice(linear, image, label)[0]) for _ in range(40)}
    assert len(by_gamma) > 5
    assert by_linear == {_lesion_position(image)}
