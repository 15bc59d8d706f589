"""A PyTorch dataset over cached slices, streamed from memory maps, optionally augmented."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .augmentation import augment_slice, build_augmentation
from .slice_cache import CachedCase


class SliceDataset(Dataset):
    """Slices of several cached cases: item ``i`` is ``(input (C, H, W) float32, target (H, W))``.

    Memory maps are opened lazily in each worker process, so only the slices read are paged
    in. ``augmentations`` names MONAI transforms (see :mod:`augmentation`).
    """

    def __init__(
        self, cases: Sequence[CachedCase], augmentations: Sequence[str] = (), seed: int = 0
    ) -> None:
        self.cases = list(cases)
        self.offsets = np.cumsum([0] + [c.count for c in self.cases]).tolist()
        self.augmentations = tuple(augmentations)
        self.seed = seed
        self._arrays: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._transform = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _open(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._arrays is None:
            self._arrays = [case.open() for case in self.cases]
            worker = torch.utils.data.get_worker_info()
            seed = self.seed + (worker.id + 1 if worker is not None else 0)
            self._transform = build_augmentation(self.augmentations, seed)
        return self._arrays

    def reseed(self, seed: int) -> None:
        """Use a new augmentation seed (e.g. per epoch, so that a resumed run differs)."""
        self.seed = seed
        self._arrays = None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        arrays = self._open()
        case = bisect.bisect_right(self.offsets, index) - 1
        inputs, targets = arrays[case]
        local = index - self.offsets[case]
        image = torch.from_numpy(np.asarray(inputs[local], dtype=np.float32))
        label = torch.from_numpy(np.asarray(targets[local], dtype=np.int64))
        return augment_slice(self._transform, image, label)
