"""Grad-CAM for semantic segmentation, batched, one backward pass per explained class.

For class ``c`` the explained scalar of a slice is the sum of the class-``c`` logits over the
pixels predicted as ``c`` (the segmentation recipe of Captum's tutorial and of
pytorch-grad-cam's ``SemanticSegmentationTarget``). Grad-CAM weights each channel of the
target layer by the spatial mean of that scalar's gradient and keeps the positive part of
the weighted sum (Selvaraju et al. 2017). Slices are independent in evaluation mode, so one
backward pass on the batch sum yields every slice's map.

Maps come out unnormalised; ``normalize_volume`` scales a whole volume at once so that
slices stay comparable (``HEATMAP_NORMALIZATION`` names the choice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HeatmapNormalization = Literal["volume-max", "none"]
HEATMAP_NORMALIZATION: HeatmapNormalization = "volume-max"
NORMALIZATION_DESCRIPTIONS = {
    "volume-max": "Grad-CAM scaled once per volume: 1 = the strongest attention anywhere in the "
    "volume, 0 = none; slices are comparable.",
    "none": "raw Grad-CAM values (ReLU of the gradient-weighted activations), not scaled.",
}


class GradCAM:
    """Grad-CAM on one layer of a segmentation network that returns logits (B, C, H, W)."""

    def __init__(self, model: nn.Module, target_layer: nn.Module) -> None:
        self.model = model
        self.target_layer = target_layer
        self._activation: torch.Tensor | None = None

    def _keep_activation(self, _module, _inputs, output) -> None:
        self._activation = output

    def __call__(
        self, inputs: torch.Tensor, classes: Sequence[int], output_size: tuple[int, int]
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Return detached logits and, per class, maps (B, *output_size) from one forward pass."""
        handle = self.target_layer.register_forward_hook(self._keep_activation)
        try:
            with torch.enable_grad():
                logits = self.model(inputs)
                activation = self._activation
                if activation is None:
                    raise RuntimeError("the Grad-CAM target layer was not run by the model")
                predicted = logits.argmax(dim=1)
                maps: dict[int, torch.Tensor] = {}
                for position, class_id in enumerate(classes):
                    mask = (predicted == class_id).to(logits.dtype)
                    score = (logits[:, class_id] * mask).sum()
                    if not score.requires_grad:
                        raise RuntimeError("the model's output does not depend on its weights")
                    (gradient,) = torch.autograd.grad(
                        score, activation, retain_graph=position < len(classes) - 1
                    )
                    weights = gradient.float().mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
                    cam = F.relu((weights * activation.detach().float()).sum(dim=1, keepdim=True))
                    cam = F.interpolate(cam, size=output_size, mode="bilinear", align_corners=False)
                    maps[class_id] = cam[:, 0].clamp_min(0)
        finally:
            handle.remove()
            self._activation = None
        return logits.detach(), maps


def normalize_volume(
    heatmap: np.ndarray, normalization: HeatmapNormalization = HEATMAP_NORMALIZATION
) -> np.ndarray:
    """Scale a whole heatmap volume in place to [0, 1] with one factor (see module docstring)."""
    if normalization == "none":
        return heatmap
    if normalization != "volume-max":
        raise ValueError(f"unknown heatmap normalisation {normalization!r}")
    peak = float(heatmap.max()) if heatmap.size else 0.0
    if peak > 0:
        heatmap *= np.float32(1.0 / peak)
    return heatmap


def mass_inside(heatmap: np.ndarray, region: np.ndarray) -> float:
    """Fraction of the heatmap's total mass that lies inside a boolean region (NaN if no mass)."""
    total = float(heatmap.sum(dtype=np.float64))
    if total <= 0:
        return float("nan")
    return float(heatmap[region].sum(dtype=np.float64)) / total


def slices_to_review(
    heatmap: np.ndarray, region: np.ndarray, threshold: float = 0.5, min_voxels: int = 50
) -> list[tuple[int, float]]:
    """Slices (axis 0) predicted to hold the class whose heatmap mass lies mostly outside it.

    Returns ``(slice, fraction inside)`` sorted from the worst agreement; ``threshold`` is
    the inside fraction below which a slice is listed.
    """
    listed = []
    for index in np.flatnonzero(region.reshape(region.shape[0], -1).sum(axis=1) >= min_voxels):
        fraction = mass_inside(heatmap[index], region[index])
        if fraction == fraction and fraction < threshold:
            listed.append((int(index), fraction))
    return sorted(listed, key=lambda item: item[1])
