"""Full-size labels from network-size probabilities equal F.interpolate + argmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from LiverXAILib.label_upsampling import bilinear_weights, labels_from_probabilities


@pytest.mark.parametrize("size", [(512, 512), (512, 430), (100, 140)])
def test_labels_match_interpolate_then_argmax(size):
    torch.manual_seed(0)
    logits = torch.randn(6, 3, 128, 128) * 3
    logits[:2, 0] += 40  # two slices of confident background only
    logits[2, 0, :, :64] += 40  # one slice with foreground on its right half only
    probabilities = torch.softmax(logits, dim=1)
    expected = F.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)
    expected = expected.argmax(dim=1).to(torch.uint8)
    labels = labels_from_probabilities(probabilities, size)
    assert labels.dtype == torch.uint8 and labels.shape == (6, *size)
    assert int((labels != expected).sum()) <= labels.numel() * 1e-5  # float rounding at ties
    assert int(labels[:2].sum()) == 0


def test_bilinear_weights_reproduce_interpolate_and_keep_constants():
    weights = bilinear_weights(37, 11)
    assert torch.allclose(weights.sum(dim=1), torch.ones(37))
    line = torch.rand(1, 1, 1, 11)
    expected = F.interpolate(line, size=(1, 37), mode="bilinear", align_corners=False)
    assert torch.allclose(line[0, 0, 0] @ weights.T, expected[0, 0, 0], atol=1e-6)
