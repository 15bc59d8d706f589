"""Training a slice network on CT + label volumes: the entry point behind the demo weights.

Slices come from the same canonical orientation, HU window and resizing as inference
(``SliceInputSpec``), so a trained model sees at run time exactly what it saw in training.
The loop is the source papers' recipe — Adam (lr 1e-3), batch 16, cross entropy or
Dice + cross entropy, augmentation, early stopping on validation Dice — and writes
``best.pt``, ``last.pt`` (resumable) and ``history.csv`` into the output folder.
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_path
from .checkpoints import CheckpointMetadata, read_checkpoint, save_checkpoint
from .constants import CLASS_NAMES, DEFAULT_HU_WINDOW
from .metrics import confusion_matrix, metrics_from_confusion
from .networks import build_model
from .orientation import canonical_orientation
from .preprocessing import SliceInputSpec
from .volume_io import read_volume


@dataclass
class Case:
    """One training case: a CT volume and its label volume (0 background, 1 liver, 2 tumor)."""

    image: Path
    label: Path


@dataclass
class TrainConfig:
    train_cases: list[Case]
    out_dir: Path
    validation_cases: list[Case] = field(default_factory=list)
    architecture: str = "unet"
    architecture_kwargs: dict = field(default_factory=dict)
    input_size: tuple[int, int] = (128, 128)
    num_slices: int = 1
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW
    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    loss: str = "dicece"  # "ce" or "dicece"
    class_weights: tuple[float, float, float] = (1.0, 1.0, 3.0)
    keep_empty_fraction: float = 0.2  # share of slices without liver that are kept
    augment: bool = True
    patience: int = 15
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    notes: str = ""


def extract_slices(
    case: Case, spec: SliceInputSpec, keep_empty_fraction: float, rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs (N, C, H, W) and nearest-neighbour resized targets (N, H, W) of a case."""
    image, ijk_to_ras = read_volume(case.image)
    labels, _ = read_volume(case.label)
    if labels.shape != image.shape:
        raise ValueError(f"{case.label.name} and {case.image.name} differ in size.")
    orientation = canonical_orientation(ijk_to_ras)
    canonical_image = orientation.apply(image)
    canonical_labels = orientation.apply(labels)
    has_liver = canonical_labels.reshape(canonical_labels.shape[0], -1).max(axis=1) > 0
    keep = [i for i in range(len(has_liver)) if has_liver[i] or rng.random() < keep_empty_fraction]
    inputs = spec.batch(canonical_image, keep)
    targets = torch.from_numpy(np.ascontiguousarray(canonical_labels[keep]).astype(np.float32))
    targets = F.interpolate(targets[:, None], size=spec.input_size, mode="nearest")[:, 0]
    return inputs, targets.long().clamp(0, len(CLASS_NAMES) - 1)


def augment_batch(inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator):
    """Random rotation (±15°), zoom (0.85–1.15), shift, Gaussian noise and intensity shift."""
    batch = inputs.shape[0]
    angle = (torch.rand(batch, generator=generator) - 0.5) * math.radians(30)
    scale = 0.85 + 0.3 * torch.rand(batch, generator=generator)
    shift = (torch.rand(batch, 2, generator=generator) - 0.5) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(inputs.shape), align_corners=False)
    inputs = F.grid_sample(inputs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    targets = F.grid_sample(
        targets[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[:, 0].long()
    noise = 0.02 * torch.randn(inputs.shape, generator=generator)
    offset = (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5) * 0.1
    return (inputs + noise + offset).clamp(0, 1), targets


def segmentation_loss(
    logits: torch.Tensor, targets: torch.Tensor, kind: str, class_weights: torch.Tensor
) -> torch.Tensor:
    """Weighted cross entropy, plus soft Dice over the foreground classes for ``dicece``."""
    loss = F.cross_entropy(logits, targets, weight=class_weights)
    if kind == "ce":
        return loss
    if kind != "dicece":
        raise ValueError(f"unknown loss {kind!r}: use ce or dicece")
    probabilities = torch.softmax(logits, dim=1)[:, 1:]
    one_hot = F.one_hot(targets, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    dice = (2 * intersection + 1.0) / (total + 1.0)
    return loss + (1 - dice).mean()


def evaluate_slices(model: nn.Module, inputs, targets, device, batch_size: int = 32) -> dict:
    """Per-class metrics (Dice, IoU, ...) of a model over prepared slices."""
    model.eval()
    cm = np.zeros((len(CLASS_NAMES),) * 2, dtype=np.int64)
    with torch.inference_mode():
        for first in range(0, len(inputs), batch_size):
            logits = model(inputs[first : first + batch_size].to(device))
            predicted = logits.argmax(dim=1).cpu().numpy()
            cm += confusion_matrix(predicted, targets[first : first + batch_size].numpy())
    return metrics_from_confusion(cm, CLASS_NAMES)


def _prepare(cases: Sequence[Case], spec: SliceInputSpec, config: TrainConfig, rng):
    parts = [extract_slices(case, spec, config.keep_empty_fraction, rng) for case in cases]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _score(metrics: dict) -> float:
    """Model selection score: mean Dice of liver and tumour (tumour counted only if present)."""
    values = [metrics["per_class"]["liver"]["dice"], metrics["per_class"]["tumor"]["dice"]]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else 0.0


def train(config: TrainConfig, log: Callable[[dict], None] | None = None) -> Path:
    """Train; returns the path of ``best.pt``. Progress goes to ``log`` as dictionaries."""
    log = log or (lambda record: print(json.dumps(record), file=sys.stdout, flush=True))
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(
        "cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    )
    spec = SliceInputSpec(config.hu_window, config.input_size, config.num_slices)
    train_x, train_y = _prepare(config.train_cases, spec, config, rng)
    val_x, val_y = (
        _prepare(config.validation_cases, spec, config, rng)
        if config.validation_cases
        else (train_x, train_y)
    )
    log({"event": "data", "train_slices": len(train_x), "validation_slices": len(val_x)})

    kwargs = {"in_channels": config.num_slices, "num_classes": len(CLASS_NAMES)}
    kwargs.update(config.architecture_kwargs)
    model = build_model(config.architecture, **kwargs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    weights = torch.tensor(config.class_weights, dtype=torch.float32, device=device)
    metadata = CheckpointMetadata(
        architecture=config.architecture,
        architecture_kwargs=kwargs,
        input_size=tuple(config.input_size),
        hu_window=tuple(config.hu_window),
        num_slices=config.num_slices,
        training_data=[Path(c.image).name for c in config.train_cases],
        notes=config.notes,
    )
    history: list[dict] = []
    start_epoch, best_score, stale = 0, -1.0, 0
    if config.resume and (out / "last.pt").is_file():
        state = read_checkpoint(out / "last.pt")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["training_state"]["optimizer"])
        start_epoch = int(state["training_state"]["epoch"]) + 1
        best_score = float(state["training_state"]["best_score"])
        stale = int(state["training_state"]["stale"])
        history = list(state["training_state"]["history"])
        log({"event": "resume", "epoch": start_epoch})

    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        losses = []
        for first in range(0, len(order), config.batch_size):
            index = order[first : first + config.batch_size]
            inputs, targets = train_x[index], train_y[index]
            if config.augment:
                inputs, targets = augment_batch(inputs, targets, generator)
            logits = model(inputs.to(device))
            loss = segmentation_loss(logits, targets.to(device), config.loss, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        metrics = evaluate_slices(model, val_x, val_y, device)
        score = _score(metrics)
        record = {
            "event": "epoch",
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "val_liver_dice": metrics["per_class"]["liver"]["dice"],
            "val_tumor_dice": metrics["per_class"]["tumor"]["dice"],
            "score": score,
            "seconds": time.perf_counter() - began,
            "slices_per_second": len(train_x) / (time.perf_counter() - began),
        }
        history.append(record)
        log(record)
        if score > best_score:
            best_score, stale = score, 0
            metadata.metrics = {"validation": metrics, "epoch": epoch}
            save_checkpoint(out / "best.pt", model, metadata)
        else:
            stale += 1
        training_state = {
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "best_score": best_score,
            "stale": stale,
            "history": history,
            "config": json.loads(json.dumps(asdict(config), default=str)),
        }
        save_checkpoint(out / "last.pt", model, metadata, training_state)
        _write_history(out / "history.csv", history)
        if stale >= config.patience:
            log({"event": "early_stop", "epoch": epoch, "best_score": best_score})
            break
    return out / "best.pt"


def _write_history(path: Path, history: list[dict]) -> None:
    with atomic_path(path, suffix=".csv") as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=[k for k in history[0] if k != "event"])
        writer.writeheader()
        for row in history:
            writer.writerow({k: v for k, v in row.items() if k != "event"})
