"""From canonical CT slices to network input: HU window, resize, 2.5D stacking.

Intensities are clipped to a Hounsfield window and scaled to [0, 1]; each slice is resized
to the model's input size (bilinear, antialiased when shrinking) and stacked with its
neighbours when the model takes several adjacent slices as channels (2.5D). Training and
inference both build their batches here, so the network sees the same thing in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def apply_window(values: np.ndarray | torch.Tensor, hu_window: tuple[float, float]):
    """Clip to the HU window and scale to [0, 1] (float32)."""
    low, high = float(hu_window[0]), float(hu_window[1])
    if isinstance(values, torch.Tensor):
        windowed = values.float() if values.dtype != torch.float32 else values.clone()
        return windowed.clamp_(low, high).sub_(low).mul_(1.0 / (high - low))
    values = np.asarray(values, dtype=np.float32)
    return (np.clip(values, low, high) - low) / np.float32(high - low)


def neighbour_indices(index: int, num_slices: int, depth: int) -> list[int]:
    """Indices of the ``num_slices`` slices centred on ``index``, repeating the edge slices."""
    half = num_slices // 2
    return [min(max(index + offset, 0), depth - 1) for offset in range(-half, num_slices - half)]


def resize_slices(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to ``size``; antialiased when shrinking."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    shrinking = batch.shape[-2] > size[0] or batch.shape[-1] > size[1]
    return F.interpolate(
        batch, size=size, mode="bilinear", align_corners=False, antialias=shrinking
    )


@dataclass(frozen=True)
class SliceInputSpec:
    """What the network expects: HU window, input size and number of adjacent slices."""

    hu_window: tuple[float, float]
    input_size: tuple[int, int]
    num_slices: int = 1

    def batch(self, canonical_volume: np.ndarray, indices: list[int]) -> torch.Tensor:
        """Network input (B, num_slices, H, W) for the given canonical slice indices."""
        depth = canonical_volume.shape[0]
        stacks = [canonical_volume[neighbour_indices(i, self.num_slices, depth)] for i in indices]
        raw = torch.from_numpy(np.ascontiguousarray(np.stack(stacks)))
        return resize_slices(apply_window(raw, self.hu_window), self.input_size)
