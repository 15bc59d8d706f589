"""Integrated Gradients for a segmentation network, through Captum, in bounded memory.

Integrated Gradients (Sundararajan et al. 2017) integrates the gradient of the explained
scalar (see :mod:`segmentation_target`) along the straight path from a baseline to the
input. Captum's implementation is used (maintained with PyTorch, Gauss-Legendre steps,
``internal_batch_size`` so that ``steps × batch`` inputs never sit in memory at once). The
predicted region is fixed from the real input, so every step explains the same pixels.

A slice's map is the sum over its input channels of the attributions, positive part (evidence
for the class), so it reads like Grad-CAM. Slices where the target class is not predicted
have a zero scalar and are not computed. The cost is ``steps`` forward and full backward
passes per explained slice and class: opt-in, and :func:`estimate_seconds` says how long.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..segment.preprocessing import apply_window
from .targets import explained_scores, target_masks

DEFAULT_STEPS = 32
DEFAULT_BASELINE: float | str = -1000.0  # air, in HU
BLUR_SIGMA_PIXELS = 8.0


def blurred(inputs: torch.Tensor, sigma: float = BLUR_SIGMA_PIXELS) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflect-padded: the "blurred" baseline."""
    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = inputs.shape[1]
    padded = F.pad(inputs, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


class IntegratedGradientsExplainer:
    """Integrated Gradients maps (B, H, W) at input size for per-sample target classes."""

    name = "integrated-gradients"

    def __init__(
        self,
        model: nn.Module,
        hu_window: tuple[float, float],
        steps: int = DEFAULT_STEPS,
        baseline: float | str = DEFAULT_BASELINE,
        internal_batch_size: int = 16,
    ) -> None:
        if steps < 2:
            raise ValueError("Integrated Gradients needs at least 2 steps")
        if isinstance(baseline, str) and baseline != "blurred":
            raise ValueError(f"baseline {baseline!r}: give a value in HU or 'blurred'")
        self.model = model
        self.hu_window = hu_window
        self.steps = int(steps)
        self.baseline = baseline
        self.internal_batch_size = max(1, int(internal_batch_size))

    def describe(self) -> str:
        baseline = (
            "a blurred copy of the input"
            if self.baseline == "blurred"
            else f"a constant {float(self.baseline):g} HU image"
        )
        return f"{self.steps} Gauss-Legendre steps from {baseline}"

    def baseline_for(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.baseline == "blurred":
            return blurred(inputs)
        value = apply_window(torch.tensor([float(self.baseline)]), self.hu_window)
        return torch.full_like(inputs, float(value))

    def _scores(self, inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return explained_scores(self.model(inputs), masks)

    def explain(
        self,
        inputs: torch.Tensor,
        targets: Sequence[torch.Tensor],
        predicted: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """One map per target vector; ``predicted`` (B, H, W) is the prediction to explain."""
        from captum.attr import IntegratedGradients

        if predicted is None:
            with torch.no_grad():
                predicted = self.model(inputs).argmax(dim=1)
        num_classes = None
        maps = []
        method = IntegratedGradients(self._scores)
        for target in targets:
            result = torch.zeros(inputs.shape[0], *inputs.shape[-2:], device=inputs.device)
            target = target.to(inputs.device)
            rows = (predicted == target[:, None, None]).flatten(1).any(dim=1).nonzero()[:, 0]
            if rows.numel():
                if num_classes is None:
                    with torch.no_grad():
                        num_classes = self.model(inputs[:1]).shape[1]
                chosen = inputs[rows]
                masks = target_masks(predicted[rows], target[rows], num_classes)
                with torch.enable_grad():
                    attributions = method.attribute(
                        chosen,
                        baselines=self.baseline_for(chosen),
                        target=target[rows],
                        additional_forward_args=(masks,),
                        n_steps=self.steps,
                        method="gausslegendre",
                        internal_batch_size=self.internal_batch_size,
                    )
                result[rows] = attributions.detach().float().sum(dim=1).clamp_min(0)
            maps.append(result)
        return maps


def estimate_seconds(
    model: nn.Module, sample: torch.Tensor, explained_slices: int, steps: int = DEFAULT_STEPS
) -> float:
    """Seconds Integrated Gradients will take: one timed forward+backward pass of ``sample``
    (a batch of network inputs) scaled to ``explained_slices × steps`` slice passes."""
    sample = sample.detach().requires_grad_(True)
    with torch.enable_grad():
        start = time.perf_counter()
        torch.autograd.grad(model(sample).sum(), sample)
        elapsed = time.perf_counter() - start
    per_slice = elapsed / max(1, sample.shape[0])
    return per_slice * explained_slices * steps if math.isfinite(per_slice) else float("nan")
