"""Training losses: cross entropy, or Dice + cross entropy (MONAI), with class weights.

Class weights (background, liver, tumour) counter the rarity of tumour pixels; by default the
tumour counts three times. ``dicece`` is MONAI's ``DiceCELoss``: the soft Dice of the
foreground classes computed over the whole batch (so slices without tumour do not dominate)
plus the weighted cross entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "dicece")


class WeightedCrossEntropy(nn.Module):
    """Pixel-wise cross entropy of logits (B, C, H, W) against labels (B, H, W)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, weight=self.weight)


class DiceCrossEntropy(nn.Module):
    """MONAI ``DiceCELoss`` over foreground classes, taking labels (B, H, W)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.loss = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, batch=True, weight=weight
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), targets[:, None])


def build_loss(kind: str, class_weights: Sequence[float]) -> nn.Module:
    """The loss called ``kind`` (``ce`` or ``dicece``) with per-class weights."""
    weight = torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
    if kind == "ce":
        return WeightedCrossEntropy(weight)
    if kind == "dicece":
        return DiceCrossEntropy(weight)
    raise ValueError(f"unknown loss {kind!r}: choose {' or '.join(LOSSES)}")
