"""Validation during training: slice metrics, cross entropy and the model-selection score."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..constants import CLASS_NAMES
from ..evaluation.metrics import confusion_matrix, metrics_from_confusion
from .distributed import DistributedContext
from .slice_dataset import SliceDataset


def evaluate_dataset(
    model: nn.Module,
    dataset: SliceDataset,
    device: torch.device,
    context: DistributedContext | None = None,
    batch_size: int = 32,
) -> tuple[dict, float]:
    """Per-class metrics and mean cross entropy over a dataset's slices (this rank's share)."""
    context = context or DistributedContext()
    model.eval()
    cm = np.zeros((len(CLASS_NAMES),) * 2, dtype=np.int64)
    loss_sum, pixels = 0.0, 0
    indices = list(range(context.rank, len(dataset), context.world_size))
    with torch.inference_mode():
        for first in range(0, len(indices), batch_size):
            items = [dataset[i] for i in indices[first : first + batch_size]]
            inputs = torch.stack([x for x, _ in items]).to(device)
            targets = torch.stack([y for _, y in items]).to(device)
            logits = model(inputs).float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            pixels += targets.numel()
            cm += confusion_matrix(logits.argmax(1).cpu().numpy(), targets.cpu().numpy())
    totals = context.sum(torch.from_numpy(np.append(cm.ravel(), [pixels]).astype(np.float64)))
    loss_total = context.sum(torch.tensor([loss_sum], dtype=torch.float64))
    cm = totals[:-1].numpy().astype(np.int64).reshape(cm.shape)
    count = max(float(totals[-1]), 1.0)
    return metrics_from_confusion(cm, CLASS_NAMES), float(loss_total[0]) / count


def selection_score(metrics: dict, tumor_present: bool = True) -> float:
    """Model selection score: mean Dice of liver and tumour, liver alone without tumour.

    Without tumour in the validation slices, tumour Dice would be 1.0 for no false positive
    and 0.0 for a single one, so it would swamp the score.
    """
    liver = metrics["per_class"]["liver"]["dice"]
    if not tumor_present:
        return float(liver)
    return float(np.mean([liver, metrics["per_class"]["tumor"]["dice"]]))
