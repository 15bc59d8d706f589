"""Full-size labels from network-size class probabilities, exactly and cheaply.

The label of a CT pixel is the argmax of the class probabilities resized bilinearly to the
slice (``align_corners=False``, as ``F.interpolate``). Resizing every class channel of every
slice to 512 x 512 costs more than the network itself on a CPU, so this module uses two
facts. Bilinear resizing is linear, so the argmax needs only the differences
``p_c - p_background`` (one channel fewer), resized as two small matrix products
(``rows @ d @ columns.T``). And an interpolated value lies between its source values, so
where every nearby network pixel says "background" the CT pixels are background: a batch of
slices is resized only over the output rows and columns that touch a network pixel where some
class beats background. The result equals ``F.interpolate`` followed by ``argmax`` (up to
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


def _span(size_out: int, size_in: int, occupied: torch.Tensor) -> tuple[slice, slice] | None:
    """The output positions whose interpolation uses an occupied input position, and the
    input positions those outputs read (bilinear weights elsewhere are zero); None when no
    output uses one (a shrinking resize skips some inputs)."""
    weights = bilinear_weights(size_out, size_in)
    touching = (weights[:, occupied] > 0).any(dim=1).nonzero()[:, 0]
    if touching.numel() == 0:
        return None
    out = slice(int(touching[0]), int(touching[-1]) + 1)
    read = (weights[out] > 0).any(dim=0).nonzero()[:, 0]
    return out, slice(int(read[0]), int(read[-1]) + 1)


def labels_from_probabilities(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 labels (B, *size) = argmax over classes of ``probabilities`` (B, C, h, w)
    resized bilinearly to ``size``; class 0 (background) wins ties with it.

    The whole batch is resized over one box: the output rows and columns that touch a
    network pixel where, on any slice of the batch, some class beats background (slices of a
    batch are neighbours, so their boxes nearly coincide and one batched product is cheaper
    than one per slice)."""
    batch, _, height, width = probabilities.shape
    device = probabilities.device
    labels = torch.zeros((batch, *size), dtype=torch.uint8, device=device)
    differences = (probabilities[:, 1:] - probabilities[:, :1]).float()
    possible = (differences > 0).any(dim=1)  # (B, h, w): a class beats background here
    if not bool(possible.any()):
        return labels
    rows = _span(size[0], height, possible.any(dim=2).any(dim=0).cpu())
    columns = _span(size[1], width, possible.any(dim=1).any(dim=0).cpu())
    if rows is None or columns is None:  # every output pixel interpolates background only
        return labels
    (out_rows, in_rows), (out_columns, in_columns) = rows, columns
    row_weights = bilinear_weights(size[0], height)[out_rows, in_rows].to(device)
    column_weights = bilinear_weights(size[1], width)[out_columns, in_columns].to(device)
    resized = row_weights @ differences[:, :, in_rows, in_columns] @ column_weights.T
    best = resized.max(dim=1)  # over the classes after background
    labels[:, out_rows, out_columns] = torch.where(best.values > 0, best.indices + 1, 0).to(
        torch.uint8
    )
    return labels
