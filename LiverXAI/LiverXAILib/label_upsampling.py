"""Full-size labels from network-size class probabilities, exactly and cheaply.

The label of a CT pixel is the argmax of the class probabilities resized bilinearly to the
slice (``align_corners=False``, as ``F.interpolate``). Resizing every class channel of every
slice to 512 x 512 costs more than the network itself on a CPU, so this module uses two
facts. Bilinear resizing is linear, so the argmax needs only the differences
``p_c - p_background`` (one channel fewer), resized as two small matrix products
(``rows @ d @ columns.T``). And an interpolated value lies between its source values, so
where every nearby network pixel says "background" the CT pixels are background: each slice
is resized only over the output rows and columns that touch a network pixel where some class
beats background. The result equals ``F.interpolate`` followed by ``argmax`` (up to
floating-point rounding where two classes tie).
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=16)
def bilinear_weights(size_out: int, size_in: int) -> torch.Tensor:
    """(size_out, size_in) matrix of pixel-centred bilinear resizing along one axis."""
    position = (torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5
    position = position.clamp(min=0)
    low = position.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    fraction = position - low
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    weights[rows, low] += 1 - fraction
    weights[rows, high] += fraction
    return weights.float()


def _touched(weights: torch.Tensor, first: int, last: int) -> tuple[int, int]:
    """Range of output positions whose interpolation uses an input in [first, last]."""
    used = (weights[:, first : last + 1] > 0).any(dim=1).nonzero()[:, 0]
    return int(used[0]), int(used[-1])


def labels_from_probabilities(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 labels (B, *size) = argmax over classes of ``probabilities`` (B, C, h, w)
    resized bilinearly to ``size``; class 0 (background) wins ties with it."""
    batch, _, height, width = probabilities.shape
    device = probabilities.device
    labels = torch.zeros((batch, *size), dtype=torch.uint8, device=device)
    differences = (probabilities[:, 1:] - probabilities[:, :1]).float()
    possible = (differences > 0).any(dim=1)  # (B, h, w): a class beats background here
    row_weights = bilinear_weights(size[0], height).to(device)
    column_weights = bilinear_weights(size[1], width).to(device)
    for index in possible.flatten(1).any(dim=1).nonzero()[:, 0].tolist():
        rows = possible[index].any(dim=1).nonzero()[:, 0]
        columns = possible[index].any(dim=0).nonzero()[:, 0]
        top, bottom = _touched(row_weights, int(rows[0]), int(rows[-1]))
        left, right = _touched(column_weights, int(columns[0]), int(columns[-1]))
        resized = (
            row_weights[top : bottom + 1] @ differences[index] @ column_weights[left : right + 1].T
        )  # (C - 1, rows, columns)
        best = resized.max(dim=0)
        labels[index, top : bottom + 1, left : right + 1] = torch.where(
            best.values > 0, best.indices + 1, 0
        ).to(torch.uint8)
    return labels
