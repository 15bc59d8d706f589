"""Which training slices an epoch draws: all in random order, or slices with tumour more often.

Tumour fills a small share of the slices of a CT (often under a fifth of the liver slices), so a
network sees little of it per epoch and learns to call everything liver. With ``tumor_share``
the sampler draws that share of every epoch's slices from the slices that hold tumour (with
replacement) and the rest from the other slices, keeping the epoch's length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, WeightedRandomSampler

from ..constants import TUMOR
from .slice_dataset import SliceDataset


def tumor_slices(dataset: SliceDataset) -> np.ndarray:
    """Boolean per slice of ``dataset``: does its label hold tumour?"""
    flags = []
    for case in dataset.cases:
        _inputs, targets = case.open()
        flags.append(np.asarray(targets).reshape(case.count, -1).max(axis=1, initial=0) == TUMOR)
    return np.concatenate(flags) if flags else np.zeros(0, dtype=bool)


def training_sampler(dataset: SliceDataset, tumor_share: float | None, seed: int) -> Sampler:
    """An epoch's draw of ``dataset`` with a seedable ``generator`` attribute.

    ``tumor_share`` None (or no slice with tumour, or every slice with tumour): each slice once
    in random order. Otherwise ``len(dataset)`` draws with replacement, of which on average
    ``tumor_share`` hold tumour.
    """
    generator = torch.Generator().manual_seed(seed)
    if tumor_share is None:
        return RandomSampler(dataset, generator=generator)
    has_tumor = tumor_slices(dataset)
    with_tumor = int(has_tumor.sum())
    if with_tumor in (0, len(has_tumor)):
        return RandomSampler(dataset, generator=generator)
    weights = np.where(
        has_tumor, tumor_share / with_tumor, (1.0 - tumor_share) / (len(has_tumor) - with_tumor)
    )
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), len(dataset), True, generator=generator
    )
