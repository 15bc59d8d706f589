"""What an attribution explains for a segmentation network: one scalar per slice and class.

For slice ``b`` and target class ``c`` the explained scalar is the sum of the class-``c``
logits over the slice's pixels labelled ``c`` (the segmentation recipe of Captum's tutorial
and of pytorch-grad-cam's ``SemanticSegmentationTarget``): in the product the labels after
the 3D clean-up, by default the network's own argmax. Where the class is absent from a slice
the scalar is zero, so its attribution is zero too.

The sum makes a slice's map grow with the class's cross-section on it: maps are scaled once
per volume, so a slice holding little of the class shows little attention. The mean was
measured as the alternative (``docs/explanations.md``): it shows every slice at full strength,
and Grad-CAM spreads over the slice, outside the body too, on slices with a small
cross-section; the liver map's mass inside the liver fell from 0.98 to 0.73-0.75 on two
unseen cases.
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


def target_masks(labels: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C, H, W) float masks: ones where slice ``b`` is labelled as its target class.

    Only the target class's channel is non-zero, so :func:`explained_scores` gives per sample
    the explained scalar in column ``targets[b]`` and zeros elsewhere.
    """
    targets = targets.to(labels.device)
    hit = (labels == targets[:, None, None]).to(torch.float32)  # (B, H, W)
    masks = torch.zeros((labels.shape[0], num_classes, *labels.shape[1:]), device=labels.device)
    masks[torch.arange(labels.shape[0], device=labels.device), targets] = hit
    return masks


def explained_scores(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, C) sums of each class's logits over its masked pixels."""
    return (logits * masks.to(logits.dtype)).sum(dim=(2, 3))
