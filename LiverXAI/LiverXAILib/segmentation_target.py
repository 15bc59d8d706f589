"""What an attribution explains for a segmentation network: one scalar per slice and class.

For slice ``b`` and target class ``c`` the explained scalar is the sum of the class-``c``
logits over the pixels the network predicts as ``c`` on that slice (the segmentation recipe
of Captum's tutorial and of pytorch-grad-cam's ``SemanticSegmentationTarget``). Where the
class is not predicted on a slice the scalar is zero, so its attribution is zero too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def as_targets(target: int | Sequence[int] | torch.Tensor, batch: int) -> torch.Tensor:
    """Per-sample target classes as a (batch,) long tensor from an int, a list or a tensor."""
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long)
    targets = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if targets.numel() != batch:
        raise ValueError(f"{targets.numel()} target classes for a batch of {batch} slices")
    return targets


def target_masks(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C, H, W) float masks: ones where slice ``b`` is predicted as its target class.

    Only the target class's channel is non-zero, so ``(logits * masks).sum((2, 3))`` gives
    per sample the explained scalar in column ``targets[b]`` and zeros elsewhere.
    """
    targets = targets.to(predicted.device)
    hit = (predicted == targets[:, None, None]).to(torch.float32)  # (B, H, W)
    masks = torch.zeros(
        (predicted.shape[0], num_classes, *predicted.shape[1:]), device=predicted.device
    )
    masks[torch.arange(predicted.shape[0], device=predicted.device), targets] = hit
    return masks


def explained_scores(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, C) sums of each class's logits over its masked pixels."""
    return (logits * masks.to(logits.dtype)).sum(dim=(2, 3))
