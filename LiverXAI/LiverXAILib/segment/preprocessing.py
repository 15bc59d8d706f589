"""From canonical CT slices to network input: HU window, resize, 2.5D stacking.

Intensities are clipped to a Hounsfield window and scaled to [0, 1]; each slice is resized
to the model's input size (bilinear, antialiased when shrinking) and stacked with its
neighbours when the model takes several adjacent slices as channels (2.5D). The neighbours
are the adjacent slices by index, or, with ``slice_step_mm``, the CT every ``slice_step_mm``
millimetres along the slice axis (linearly interpolated between the two nearest slices), so a
2.5D model sees the same anatomy at 1.6 mm and at 5 mm slice spacing. Both repeat the edge
slices at the volume's ends. Training and inference both build their batches here, so the
network sees the same thing in both.
"""

from __future__ import annotations

import math
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


def neighbour_positions(
    indices: list[int], num_slices: int, depth: int, step_slices: float
) -> np.ndarray:
    """Fractional slice positions (B, num_slices) every ``step_slices`` slices around each
    index, clamped to ``[0, depth - 1]``; positions within 1e-6 of a slice are snapped to it."""
    half = num_slices // 2
    offsets = np.arange(-half, num_slices - half, dtype=np.float64) * step_slices
    positions = np.asarray(indices, dtype=np.float64)[:, None] + offsets
    nearest = np.round(positions)
    positions = np.where(np.abs(positions - nearest) < 1e-6, nearest, positions)
    return np.clip(positions, 0.0, depth - 1.0)


def interpolated_slices(volume: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The slices of ``volume`` at fractional ``positions`` (any shape, within the volume),
    linearly interpolated along axis 0; float32 of shape ``positions.shape + slice shape``."""
    below = np.floor(positions).astype(np.intp)
    weight = (positions - below).astype(np.float32)
    stack = volume[below].astype(np.float32)
    if weight.any():  # whole positions take their slice as it is
        above = volume[np.minimum(below + 1, volume.shape[0] - 1)].astype(np.float32)
        weight = weight.reshape(weight.shape + (1,) * (volume.ndim - 1))
        stack = stack * (1.0 - weight) + above * weight
    return stack


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
    """What the network expects: HU window, input size, number of slices per input and the
    distance between them (``slice_step_mm``; None: adjacent slices by index)."""

    hu_window: tuple[float, float]
    input_size: tuple[int, int]
    num_slices: int = 1
    slice_step_mm: float | None = None

    def step_slices(self, slice_spacing_mm: float | None) -> float | None:
        """The neighbours' distance in slices for a volume of ``slice_spacing_mm``; None when
        they are the adjacent slices by index. ``ValueError`` if a step needs a spacing."""
        if self.slice_step_mm is None or self.num_slices == 1:
            return None
        if slice_spacing_mm is None:
            raise ValueError(
                f"This model stacks slices {self.slice_step_mm:g} mm apart: the volume's slice "
                "spacing (mm) is needed to build its input."
            )
        spacing = float(slice_spacing_mm)
        if not math.isfinite(spacing) or spacing <= 0:
            raise ValueError(f"The slice spacing must be a positive number of mm, not {spacing}.")
        return float(self.slice_step_mm) / spacing

    def stacks(
        self,
        canonical_volume: np.ndarray,
        indices: list[int],
        slice_spacing_mm: float | None = None,
    ) -> np.ndarray:
        """The CT (HU, not windowed or resized) of each input: (B, num_slices, rows, columns).

        ``slice_spacing_mm`` is the spacing along the canonical slice axis (axis 0); needed
        when ``slice_step_mm`` is set (``ValueError`` otherwise).
        """
        step = self.step_slices(slice_spacing_mm)
        depth = canonical_volume.shape[0]
        if step is None:
            n = self.num_slices
            return np.stack([canonical_volume[neighbour_indices(i, n, depth)] for i in indices])
        positions = neighbour_positions(indices, self.num_slices, depth, step)
        return interpolated_slices(canonical_volume, positions)

    def batch(
        self,
        canonical_volume: np.ndarray,
        indices: list[int],
        slice_spacing_mm: float | None = None,
    ) -> torch.Tensor:
        """Network input (B, num_slices, H, W) for the given canonical slice indices (see
        :meth:`stacks` for ``slice_spacing_mm``)."""
        raw = self.stacks(canonical_volume, indices, slice_spacing_mm)
        raw = torch.from_numpy(np.ascontiguousarray(raw))
        return resize_slices(apply_window(raw, self.hu_window), self.input_size)
