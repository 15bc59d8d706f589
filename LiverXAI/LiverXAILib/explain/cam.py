"""Grad-CAM and Grad-CAM++ on one layer of a segmentation network, batched.

Both combine the channels of a target layer's activation ``A`` with the gradient ``g`` of the
explained scalar (see :mod:`segmentation_target`) and keep the positive part of the sum over
channels. Two weightings (``CAM_WEIGHTINGS``):

- ``"channel-mean"`` (the default, the published methods): one weight per channel, the
  gradient's mean over the slice for Grad-CAM (Selvaraju et al. 2017), ``sum(alpha *
  relu(g))`` with ``alpha = g² / (2 g² + sum(A) g³)`` for Grad-CAM++ (Chattopadhay et al.
  2018, in the closed form pytorch-grad-cam uses). The slice-wide weights light every pixel
  where the weighted channels fire, also where the explained pixels do not depend on it: at a
  layer whose channels are not specific to the class (the U-Net's quarter-resolution decoder
  stage) that is the air around the body. The default layer is therefore chosen per
  architecture by measurement (:func:`explain.default_cam_layer`, ``docs/explanations.md``).
- ``"element-wise"``: each pixel's channels weighted by the gradient at that pixel,
  ``relu(sum_k g_k A_k)`` for Grad-CAM (HiResCAM, Draelos & Carin 2020), ``relu(sum_k alpha_k
  relu(g_k) A_k)`` for Grad-CAM++. Confined to the pixels the explained score depends on, but
  on the demo U-Net it fails the model-randomisation sanity check (its maps of a randomised
  network still rank-correlate 0.7 to 0.9 with the trained one's): its place on the organ
  follows from the explained region, not from what the network learned. For research only.

The explained pixels are the network's own argmax or, given ``labels``, those labels (the
product explains the labels after the 3D clean-up). One forward pass serves every target and
both variants; autograd records only from the target layer on, and each target vector costs
one backward pass that stops there (none when no slice of the batch holds its class). Slices
are independent in evaluation mode, so the gradient of the batch sum is each slice's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .targets import explained_scores, target_masks

CAM_VARIANTS = ("gradcam", "gradcam++")
CamWeighting = Literal["element-wise", "channel-mean"]
CAM_WEIGHTINGS: tuple[str, ...] = ("channel-mean", "element-wise")
DEFAULT_WEIGHTING: CamWeighting = "channel-mean"


def cam_weights(variant: str, gradient: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """Channel-mean weights (B, K, 1, 1) of a CAM variant from float32 gradient and activation."""
    weights = _weights(variant, gradient, activation)
    if variant == "gradcam":
        return weights.mean(dim=(2, 3), keepdim=True)
    return weights.sum(dim=(2, 3), keepdim=True)


def _weights(variant: str, gradient: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights (B, K, H, W): the gradient, or Grad-CAM++'s ``alpha * relu(g)``."""
    if variant == "gradcam":
        return gradient
    if variant == "gradcam++":
        squared = gradient.pow(2)
        denominator = 2 * squared + activation.sum(dim=(2, 3), keepdim=True) * squared * gradient
        alpha = torch.where(gradient != 0, squared / (denominator + 1e-7), 0.0)
        return alpha * F.relu(gradient)
    raise ValueError(f"unknown CAM variant {variant!r}; choose from {CAM_VARIANTS}")


def cam_map(
    variant: str,
    gradient: torch.Tensor,
    activation: torch.Tensor,
    weighting: str = DEFAULT_WEIGHTING,
) -> torch.Tensor:
    """The (B, 1, h, w) map of a CAM variant at the layer's resolution, non-negative."""
    if weighting == "element-wise":
        weights = _weights(variant, gradient, activation)
    elif weighting == "channel-mean":
        weights = cam_weights(variant, gradient, activation)
    else:
        raise ValueError(f"unknown CAM weighting {weighting!r}; choose from {CAM_WEIGHTINGS}")
    return F.relu((weights * activation).sum(dim=1, keepdim=True))


class LayerCAM:
    """Grad-CAM family on ``layer`` of ``model`` (logits (B, C, H, W)); variants share passes."""

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module,
        variants: Sequence[str] = ("gradcam",),
        weighting: str = DEFAULT_WEIGHTING,
    ) -> None:
        unknown = [v for v in variants if v not in CAM_VARIANTS]
        if unknown or not variants:
            raise ValueError(f"unknown CAM variants {unknown}; choose from {CAM_VARIANTS}")
        if weighting not in CAM_WEIGHTINGS:
            raise ValueError(f"unknown CAM weighting {weighting!r}; choose from {CAM_WEIGHTINGS}")
        self.model = model
        self.layer = layer
        self.variants = tuple(variants)
        self.weighting = weighting
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
        self,
        inputs: torch.Tensor,
        targets: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """Detached logits and, per variant, one map (B, H, W) at input size per target vector.

        ``labels`` (B, H, W) at the logits' size are the pixels to explain (default: the
        network's argmax)."""
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
                explained = logits.detach().argmax(dim=1) if labels is None else labels
                maps = self._maps(inputs, logits, activation, targets, explained.long())
        finally:
            handle.remove()
            self._activation = None
        return logits.detach(), maps

    def _maps(
        self,
        inputs: torch.Tensor,
        logits: torch.Tensor,
        activation: torch.Tensor,
        targets: Sequence[torch.Tensor],
        explained: torch.Tensor,
    ) -> dict[str, list[torch.Tensor]]:
        """One backward pass per target vector; maps resized to the input size."""
        maps: dict[str, list[torch.Tensor]] = {v: [] for v in self.variants}
        for position, target in enumerate(targets):
            masks = target_masks(explained.to(logits.device), target, logits.shape[1])
            # the gradient flows back in the masks' memory layout: the logits'
            masks = torch.empty_like(logits, dtype=masks.dtype).copy_(masks)
            if not masks.any():  # no slice holds its target: every map is zero
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
                cam = cam_map(variant, gradient, values, self.weighting)
                cam = F.interpolate(
                    cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False
                )
                maps[variant].append(cam[:, 0].clamp_min(0))
        return maps
