"""Full-size labels from network-size probabilities equal F.interpolate + argmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from LiverXAILib.segment.label_upsampling import bilinear_weights, labels_from_probabilities


@pytest.mark.parametrize("size", [(512, 512), (512, 430), (100, 140), (40, 64), (3, 5)])
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


def test_slices_with_foreground_in_different_corners_share_one_box_exactly():
    logits = torch.zeros(3, 3, 64, 64)
    logits[:, 0] = 20.0  # confident background everywhere ...
    logits[0, 1, 2:6, 3:9] = 40.0  # ... but liver near the top left of slice 0,
    logits[1, 2, 50:60, 55:62] = 40.0  # tumour near the bottom right of slice 1,
    logits[2, 1, 30:34, 30:34] = 40.0  # and a liver spot with a tumour core in slice 2
    logits[2, 2, 31:33, 31:33] = 60.0
    probabilities = torch.softmax(logits, dim=1)
    expected = F.interpolate(probabilities, size=(256, 200), mode="bilinear", align_corners=False)
    labels = labels_from_probabilities(probabilities, (256, 200))
    assert torch.equal(labels, expected.argmax(dim=1).to(torch.uint8))
    assert [sorted(torch.unique(s).tolist()) for s in labels] == [[0, 1], [0, 2], [0, 1, 2]]


def test_a_shrinking_resize_that_reads_no_foreground_pixel_gives_background():
    logits = torch.zeros(1, 3, 8, 8)
    logits[:, 0] = 10.0
    logits[0, 1, 0, 0] = 30.0  # the corner pixel, which a 2 x 2 output never reads
    probabilities = torch.softmax(logits, dim=1)
    expected = F.interpolate(probabilities, size=(2, 2), mode="bilinear", align_corners=False)
    labels = labels_from_probabilities(probabilities, (2, 2))
    assert torch.equal(labels, expected.argmax(dim=1).to(torch.uint8))
    assert int(labels.sum()) == 0
