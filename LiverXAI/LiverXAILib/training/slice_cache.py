"""On-disk cache of training slices, read back as memory maps.

Each case's slices are extracted once — the same canonical reorientation, HU window,
resizing and 2.5D stacking as inference (``load_canonical_case`` and ``SliceInputSpec``) —
and stored as ``inputs.npy`` (float16, N × C × H × W) and ``targets.npy`` (uint8, N × H × W)
in a folder named by a hash of the case files and the extraction settings. A second run
with the same settings opens them in milliseconds; training streams from the memory maps,
so a full LiTS run (≈58,000 slices) does not need the dataset in RAM. A slice step
(``SliceInputSpec.slice_step_mm``) is part of the folder's hash, so entries stacked by index
are never reused for it (and entries without a step keep their old names).

Slices with liver are all kept; of the others a fraction ``keep_empty_fraction`` is kept,
chosen with a seed (the source papers drop slices without liver).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..segment.preprocessing import SliceInputSpec
from .cases import Case, load_canonical_case

CACHE_VERSION = 2
_CHUNK = 32  # slices extracted at once: bounds the memory of a 512×512 case


@dataclass(frozen=True)
class CachedCase:
    """A case's cached slices: the folder, the number of slices and the slice indices."""

    case_id: str
    folder: Path
    count: int
    slice_indices: tuple[int, ...]

    def open(self) -> tuple[np.ndarray, np.ndarray]:
        """Read-only memory maps of the inputs (N, C, H, W) and targets (N, H, W)."""
        inputs = np.load(self.folder / "inputs.npy", mmap_mode="r")
        targets = np.load(self.folder / "targets.npy", mmap_mode="r")
        return inputs, targets


def _file_identity(path: Path) -> dict:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class SliceCache:
    """Extracts the training slices of cases into ``root`` once, then reuses them."""

    def __init__(
        self, root: str | Path, spec: SliceInputSpec, keep_empty_fraction: float, seed: int = 0
    ) -> None:
        if not 0 <= keep_empty_fraction <= 1:
            raise ValueError(f"keep_empty_fraction must lie in [0, 1], got {keep_empty_fraction}")
        self.root = Path(root)
        self.spec = spec
        self.keep_empty_fraction = float(keep_empty_fraction)
        self.seed = int(seed)

    def key(self, case: Case) -> str:
        """Hash of the case's files and every setting that changes the extracted slices."""
        settings = {
            "version": CACHE_VERSION,
            "image": _file_identity(case.image),
            "label": _file_identity(case.label),
            "hu_window": list(self.spec.hu_window),
            "input_size": list(self.spec.input_size),
            "num_slices": self.spec.num_slices,
            "keep_empty_fraction": self.keep_empty_fraction,
            "seed": self.seed,
        }
        if self.spec.slice_step_mm is not None:  # absent: the hash of the entries made before
            settings["slice_step_mm"] = float(self.spec.slice_step_mm)
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        return f"{case.case_id}-{digest[:16]}"

    def lookup(self, case: Case) -> CachedCase | None:
        """The cached slices of ``case`` if a complete entry exists."""
        folder = self.root / self.key(case)
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return CachedCase(case.case_id, folder, int(data["count"]), tuple(data["slice_indices"]))

    def ensure(self, case: Case) -> tuple[CachedCase, bool]:
        """Cached slices of ``case``, extracting them first if needed; ``True`` if reused."""
        found = self.lookup(case)
        if found is not None:
            return found, True
        return self._extract(case), False

    def _choose_slices(self, case: Case, labels: np.ndarray) -> list[int]:
        has_liver = labels.reshape(labels.shape[0], -1).max(axis=1) > 0
        rng = random.Random(f"{self.seed}:{case.case_id}")
        draws = [rng.random() for _ in has_liver]
        return [
            i for i, liver in enumerate(has_liver) if liver or draws[i] < self.keep_empty_fraction
        ]

    def _extract(self, case: Case) -> CachedCase:
        canonical = load_canonical_case(case)
        indices = self._choose_slices(case, canonical.labels)
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / self.key(case)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=self.root))
        try:
            height, width = self.spec.input_size
            inputs = np.lib.format.open_memmap(
                staging / "inputs.npy",
                mode="w+",
                dtype=np.float16,
                shape=(len(indices), self.spec.num_slices, height, width),
            )
            targets = np.lib.format.open_memmap(
                staging / "targets.npy",
                mode="w+",
                dtype=np.uint8,
                shape=(len(indices), height, width),
            )
            for first in range(0, len(indices), _CHUNK):
                chunk = indices[first : first + _CHUNK]
                batch = self.spec.batch(canonical.image, chunk, canonical.spacing[0])
                inputs[first : first + len(chunk)] = batch.numpy()
                targets[first : first + len(chunk)] = resize_labels(
                    canonical.labels[chunk], self.spec.input_size
                )
            inputs.flush()
            targets.flush()
            del inputs, targets
            manifest = {"case": case.to_dict(), "count": len(indices), "slice_indices": indices}
            (staging / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
            try:
                os.replace(staging, folder)
            except OSError:  # another process finished the same entry first: keep theirs
                if not (folder / "manifest.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return CachedCase(case.case_id, folder, len(indices), tuple(indices))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of label slices (N, H, W) to ``size`` (uint8).

    ``nearest-exact`` samples pixel centres, aligned with the images' bilinear resize
    (``align_corners=False``); legacy ``nearest`` would shift labels by up to a pixel.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(labels).astype(np.float32))[:, None]
    return (
        F.interpolate(tensor, size=tuple(size), mode="nearest-exact")[:, 0].to(torch.uint8).numpy()
    )
