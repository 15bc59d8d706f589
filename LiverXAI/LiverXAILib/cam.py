"""Grad-CAM and Grad-CAM++ on one layer of a segmentation network, batched.

Both weight the channels of a target layer's activation ``A`` by gradients of the explained
scalar (see :mod:`segmentation_target`) and keep the positive part of the weighted sum:
Grad-CAM by the spatial mean of the gradient (Selvaraju et al. 2017), Grad-CAM++ by
``alpha * relu(gradient)`` summed over space, with ``alpha = g² / (2 g² + sum(A) g³)``
(Chattopadhay et al. 2018, in the closed form pytorch-grad-cam uses). One forward pass
serves every target and both variants; autograd records only from the target layer on, and
each target vector costs one backward pass that stops there (none when no slice of the batch
predicts its target class). Slices are independent in evaluation mode, so the gradient of the
batch sum is each slice's own gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .segmentation_target import explained_scores, target_masks

CAM_VARIANTS = ("gradcam", "gradcam++")


def cam_weights(variant: str, gradient: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """Channel weights (B, K, 1, 1) of a CAM variant from float32 gradient and activation."""
    if variant == "gradcam":
        return gradient.mean(dim=(2, 3), keepdim=True)
    if variant == "gradcam++":
        squared = gradient.pow(2)
        denominator = 2 * squared + activation.sum(dim=(2, 3), keepdim=True) * squared * gradient
        alpha = torch.where(gradient != 0, squared / (denominator + 1e-7), 0.0)
        return (alpha * F.relu(gradient)).sum(dim=(2, 3), keepdim=True)
    raise ValueError(f"unknown CAM variant {variant!r}; choose from {CAM_VARIANTS}")


class LayerCAM:
    """Grad-CAM family on ``layer`` of ``model`` (logits (B, C, H, W)); variants share passes."""

    def __init__(
        self, model: nn.Module, layer: nn.Module, variants: Sequence[str] = ("gradcam",)
    ) -> None:
        unknown = [v for v in variants if v not in CAM_VARIANTS]
        if unknown or not variants:
            raise ValueError(f"unknown CAM variants {unknown}; choose from {CAM_VARIANTS}")
        self.model = model
        self.layer = layer
        self.variants = tuple(variants)
        self._activation: torch.Tensor | None = None

    def _track_from_here(self, _module, _inputs, output):
        """Forward hook: autograd starts at the target layer's output (nothing before it
        needs a gradient), so the layers before it run without recording a graph."""
        torch.set_grad_enabled(True)
        if not isinstance(output, torch.Tensor):
            return None
        self._activation = output.detach().requires_grad_(True)
        return self._activation

    def explain(
        self, inputs: torch.Tensor, targets: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Detached logits and, per variant, one map (B, H, W) at input size per target vector."""
        handle = self.layer.register_forward_hook(self._track_from_here)
        try:
            with torch.no_grad():
                try:
                    logits = self.model(inputs)
                finally:
                    torch.set_grad_enabled(False)  # restored to the caller's by no_grad
            with torch.enable_grad():
                activation = self._activation
                if activation is None:
                    raise RuntimeError("the CAM target layer did not run or gave no tensor")
                if activation.dim() != 4:
                    raise ValueError("the CAM target layer must output a (B, K, H, W) tensor")
                predicted = logits.detach().argmax(dim=1)
                maps: dict[str, list[torch.Tensor]] = {v: [] for v in self.variants}
                for position, target in enumerate(targets):
                    masks = target_masks(predicted, target, logits.shape[1])
                    # the gradient flows back in the masks' memory layout: the logits'
                    masks = torch.empty_like(logits, dtype=masks.dtype).copy_(masks)
                    if not masks.any():  # no slice predicts its target: every map is zero
                        for variant in self.variants:
                            maps[variant].append(inputs.new_zeros(len(inputs), *inputs.shape[-2:]))
                        continue
                    score = explained_scores(logits, masks).sum()
                    if not score.requires_grad:
                        raise RuntimeError("the model's output does not depend on its weights")
                    (gradient,) = torch.autograd.grad(
                        score, activation, retain_graph=position < len(targets) - 1
                    )
                    gradient, values = gradient.float(), activation.detach().float()
                    for variant in self.variants:
                        weights = cam_weights(variant, gradient, values)
                        cam = F.relu((weights * values).sum(dim=1, keepdim=True))
                        cam = F.interpolate(
                            cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False
                        )
                        maps[variant].append(cam[:, 0].clamp_min(0))
        finally:
            handle.remove()
            self._activation = None
        return logits.detach(), maps
