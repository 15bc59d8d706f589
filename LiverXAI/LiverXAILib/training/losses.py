"""Training losses with class weights: cross entropy, Dice + CE, Tversky + CE, Dice + focal.

Class weights (background, liver, tumour) counter the rarity of tumour pixels; by default the
tumour counts three times. The overlap terms (MONAI) cover the foreground classes and are
computed over the whole batch, so slices without tumour do not dominate:

- ``ce`` — weighted cross entropy;
- ``dicece`` — MONAI's ``DiceCELoss``: soft Dice plus the weighted cross entropy (default);
- ``tversky`` — Tversky loss (false negatives weigh 0.7, false positives 0.3, so a missed
  lesion costs more than a false one) plus the weighted cross entropy;
- ``dicefocal`` — soft Dice plus the weighted focal loss (γ = 2: well-classified pixels, most
  of the background and the liver, count less).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("ce", "dicece", "tversky", "dicefocal")
TVERSKY_FALSE_POSITIVE, TVERSKY_FALSE_NEGATIVE = 0.3, 0.7
FOCAL_GAMMA = 2.0


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


class TverskyCrossEntropy(nn.Module):
    """MONAI ``TverskyLoss`` over foreground classes plus weighted cross entropy."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        from monai.losses import TverskyLoss

        self.tversky = TverskyLoss(
            include_background=False,
            to_onehot_y=True,
            softmax=True,
            batch=True,
            alpha=TVERSKY_FALSE_POSITIVE,
            beta=TVERSKY_FALSE_NEGATIVE,
        )
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        cross_entropy = F.cross_entropy(logits, targets, weight=self.weight)
        return self.tversky(logits, targets[:, None]) + cross_entropy


class DiceFocal(nn.Module):
    """MONAI soft Dice over foreground classes plus the class-weighted focal loss (softmax)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        from monai.losses import DiceLoss, FocalLoss

        self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
        self.focal = FocalLoss(
            include_background=True,
            to_onehot_y=True,
            gamma=FOCAL_GAMMA,
            weight=weight,
            use_softmax=True,
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets[:, None]
        return self.dice(logits, targets) + self.focal(logits, targets)


def build_loss(kind: str, class_weights: Sequence[float]) -> nn.Module:
    """The loss called ``kind`` (one of :data:`LOSSES`) with per-class weights."""
    weight = torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
    if kind == "ce":
        return WeightedCrossEntropy(weight)
    if kind == "dicece":
        return DiceCrossEntropy(weight)
    if kind == "tversky":
        return TverskyCrossEntropy(weight)
    if kind == "dicefocal":
        return DiceFocal(weight)
    raise ValueError(f"unknown loss {kind!r}: choose {', '.join(LOSSES)}")
