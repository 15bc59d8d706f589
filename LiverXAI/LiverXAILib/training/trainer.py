"""Training a slice network on CT + label volumes, headless or as the Slicer module's child.

Data come from a LiTS / MSD folder or a CSV (``data.py``), split by patient with a seed and
the split written to ``OUT/split.json``. Slices are extracted once into an on-disk cache with
the same canonical orientation, HU window, resizing and 2.5D stacking as inference (with
``slice_step_mm``, ``--slice-step-mm``: neighbours that many mm apart, whatever the scan's
slice spacing; stored in the checkpoints), then streamed from memory maps with MONAI
augmentation. The recipe defaults to the source papers': Adam (lr 1e-3), batch 16, Dice +
cross entropy (or cross entropy) with class weights, early stopping on validation Dice;
optional step or cosine decay; mixed precision on CUDA; several processes through
``torchrun`` (distributed data parallel).

Progress is printed as JSON lines (one object per line with an ``event`` key: start, split,
cache, data, resume, step, epoch, early_stop, stopped, done). ``OUT`` receives ``best.pt``
(best validation score), ``last.pt`` (every epoch; ``resume=True`` continues from it, so a
crash loses at most one epoch), ``history.csv`` and ``curves.png``. Creating ``OUT/STOP`` (or
SIGTERM / SIGINT) stops after the current step, keeping the last finished epoch.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..constants import CLASS_NAMES, DEFAULT_HU_WINDOW
from ..errors import InputError
from ..models.checkpoints import CheckpointMetadata, read_checkpoint, save_checkpoint
from ..models.download import register_checkpoint
from ..models.networks import build_model, count_parameters
from ..segment.preprocessing import SliceInputSpec
from .cases import Case, DataSplit, discover_cases, split_by_patient
from .curves import write_curves, write_history
from .distributed import DistributedContext, distributed_context
from .losses import build_loss
from .options import DEFAULT_AUGMENTATIONS, SCHEDULES, default_cache_dir
from .resume import check_resumable, restore, run_problems
from .sampler import training_sampler
from .slice_cache import CachedCase, SliceCache
from .slice_dataset import SliceDataset
from .stop_request import STOP_FILE, StoppedWhilePreparing, StopRequest
from .validation import evaluate_dataset, selection_score

Log = Callable[[dict], None]
#: The epoch's scores when nothing is scored (no validation cases, training slices not scored).
UNSCORED = {
    "per_class": {"liver": {"dice": math.nan}, "tumor": {"dice": math.nan}},
    "support": {"tumor": 0},
}


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in ``last.pt`` for the record."""

    out_dir: Path
    data: Path | None = None  # LiTS / MSD folder or CSV, split by patient
    train_cases: list[Case] = field(default_factory=list)  # or explicit cases
    validation_cases: list[Case] = field(default_factory=list)
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    architecture: str = "unet"
    architecture_kwargs: dict = field(default_factory=dict)
    input_size: tuple[int, int] = (128, 128)
    num_slices: int = 1
    slice_step_mm: float | None = None  # 2.5D neighbours this far apart (mm); None: adjacent
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW
    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    schedule: str = "none"
    loss: str = "dicece"
    class_weights: tuple[float, float, float] = (1.0, 1.0, 3.0)
    keep_empty_fraction: float = 0.2
    tumor_share: float | None = None  # share of drawn slices holding tumour; None: as cached
    augmentations: tuple[str, ...] = DEFAULT_AUGMENTATIONS
    patience: int = 15
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    cache_dir: Path | None = None
    resume: bool = False
    score_training_slices: bool = True  # without validation cases: score them every epoch
    register_as: str = ""  # add best.pt to the user's model catalog under this name
    notes: str = ""

    def problems(self) -> list[str]:
        """Every setting that cannot work (the ``train`` command's checks); empty if none."""
        return run_problems(self)


def json_log(record: dict) -> None:
    """Print one progress record as a JSON line on stdout."""
    print(json.dumps(record), file=sys.stdout, flush=True)


def _choose_device(requested: str, context_local_rank: int) -> torch.device:
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", context_local_rank)
    if requested == "cuda":
        raise InputError("--device cuda was asked for, but PyTorch sees no CUDA GPU.")
    return torch.device("cpu")


def resolve_split(config: TrainConfig) -> DataSplit:
    """The run's split: reused from ``OUT/split.json`` when resuming, else made and written."""
    split_file = Path(config.out_dir) / "split.json"
    if config.resume and split_file.is_file():
        return DataSplit.read(split_file)
    if config.data is not None:
        cases = discover_cases(config.data)
        split = split_by_patient(
            cases, config.validation_fraction, config.test_fraction, config.split_seed
        )
    elif config.train_cases:
        split = DataSplit(list(config.train_cases), list(config.validation_cases))
    else:
        raise InputError("No training data: give a data folder / CSV or training cases.")
    return split


def _cache_cases(
    cases: list[Case],
    cache: SliceCache,
    context: DistributedContext,
    log: Log,
    stop: StopRequest,
) -> list[CachedCase]:
    """Extract every case's slices (each process its share), then look them all up."""
    for index, case in enumerate(cases):
        if index % context.world_size != context.rank:
            continue
        if stop.requested():
            raise StoppedWhilePreparing
        entry, reused = cache.ensure(case)
        log(
            {
                "event": "cache",
                "case": case.case_id,
                "index": index,
                "total": len(cases),
                "slices": entry.count,
                "cached": reused,
            }
        )
    context.barrier()
    cached = [cache.lookup(case) for case in cases]
    missing = [case.case_id for case, entry in zip(cases, cached, strict=True) if entry is None]
    if missing:
        raise RuntimeError(f"Slice cache entries missing after extraction: {missing}")
    return cached


def _scheduler(optimizer, config: TrainConfig):
    if config.schedule == "step":
        step = max(1, config.epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=0.1)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs))
    if config.schedule == "none":
        return None
    raise ValueError(f"unknown schedule {config.schedule!r}: choose {', '.join(SCHEDULES)}")


def train(config: TrainConfig, log: Log | None = None) -> Path:
    """Train as configured; returns the path of ``best.pt`` (see the module docstring).

    Raises ``ValueError`` before anything starts if a setting cannot work
    (:meth:`TrainConfig.problems`), e.g. no epoch or an empty batch.
    """
    problems = config.problems()
    if problems:
        raise ValueError(" ".join(problems))
    log = log or json_log
    out = Path(config.out_dir)
    device_type = (
        "cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    )
    context = distributed_context(device_type)
    try:
        with StopRequest(out) as stop:
            return _train(config, context, log if context.is_main else (lambda _record: None), stop)
    finally:
        context.close()
        if context.is_main:
            (out / STOP_FILE).unlink(missing_ok=True)


def _train(config: TrainConfig, context: DistributedContext, log: Log, stop: StopRequest) -> Path:
    out = Path(config.out_dir)
    if not config.resume and (out / "last.pt").is_file():
        raise InputError(
            f"{out} already holds a training run (last.pt); pass --resume to continue it or "
            "choose another output folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    recipe = json.loads(json.dumps(asdict(config), default=str))
    if config.resume and (out / "last.pt").is_file():
        check_resumable(read_checkpoint(out / "last.pt"), recipe, out)
    device = _choose_device(config.device, context.local_rank)
    torch.manual_seed(config.seed + context.rank)
    log(
        {
            "event": "start",
            "arch": config.architecture,
            "epochs": config.epochs,
            "out": str(out),
            "device": str(device),
            "world_size": context.world_size,
        }
    )

    split = resolve_split(config)
    if not split.train:
        raise InputError("The split left no case for training.")
    if context.is_main:
        split.write(out / "split.json")
        log(
            {
                "event": "split",
                **{
                    part: [c.case_id for c in split.part(part)]
                    for part in ("train", "validation", "test")
                },
                "file": str(out / "split.json"),
            }
        )
    began = time.perf_counter()
    spec = SliceInputSpec(
        config.hu_window, config.input_size, config.num_slices, config.slice_step_mm
    )
    cache = SliceCache(
        config.cache_dir or default_cache_dir(), spec, config.keep_empty_fraction, config.split_seed
    )
    selection_part = "validation" if split.validation else "training"
    try:
        train_cached = _cache_cases(split.train, cache, context, log, stop)
        validation_cached = (
            _cache_cases(split.validation, cache, context, log, stop)
            if split.validation
            else train_cached
        )
    except StoppedWhilePreparing:
        log({"event": "stopped", "epoch": None})
        return out / "best.pt"
    train_set = SliceDataset(train_cached, config.augmentations, seed=config.seed)
    validation_set = SliceDataset(validation_cached)
    log(
        {
            "event": "data",
            "train_slices": len(train_set),
            "validation_slices": len(validation_set),
            "selection": selection_part,
            "seconds": time.perf_counter() - began,
        }
    )

    kwargs = {"in_channels": config.num_slices, "num_classes": len(CLASS_NAMES)}
    kwargs.update(config.architecture_kwargs)
    network = build_model(config.architecture, **kwargs).to(device)
    model: nn.Module = network
    if context.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = _scheduler(optimizer, config)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_function = build_loss(config.loss, config.class_weights).to(device)
    metadata = CheckpointMetadata(
        architecture=config.architecture,
        architecture_kwargs=kwargs,
        input_size=tuple(config.input_size),
        hu_window=tuple(config.hu_window),
        num_slices=config.num_slices,
        slice_step_mm=config.slice_step_mm,
        training_data=[f"{c.image.parent.name}/{c.image.name}" for c in split.train],
        notes=config.notes,
    )

    history: list[dict] = []
    start_epoch, best_score, stale = 0, -1.0, 0
    if config.resume and (out / "last.pt").is_file():
        state = read_checkpoint(out / "last.pt")
        start_epoch, best_score, stale, history = restore(
            state, network, optimizer, scheduler, scaler
        )
        log({"event": "resume", "epoch": start_epoch})

    per_rank_batch = max(1, math.ceil(config.batch_size / context.world_size))
    if context.enabled:
        sampler = DistributedSampler(
            train_set, context.world_size, context.rank, shuffle=True, seed=config.seed
        )
    else:
        sampler = training_sampler(train_set, config.tumor_share, config.seed)
    epoch_seconds: list[float] = []
    finished = "done"
    for epoch in range(start_epoch, config.epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(config.seed * 100_003 + epoch)
        train_set.reseed(config.seed * 100_003 + epoch * 101 + context.rank)
        loader = DataLoader(train_set, per_rank_batch, sampler=sampler, num_workers=config.workers)
        epoch_began = time.perf_counter()
        loss_sum, seen, stopped = _train_epoch(
            model, loader, optimizer, scaler, loss_function, epoch, device, context, stop, log
        )
        if stopped:
            finished = "stopped"
            log({"event": "stopped", "epoch": epoch})
            break
        train_seconds = time.perf_counter() - epoch_began
        totals = context.sum(torch.tensor([loss_sum, seen], dtype=torch.float64))
        if split.validation or config.score_training_slices:
            metrics, validation_loss = evaluate_dataset(network, validation_set, device, context)
            score = selection_score(metrics, tumor_present=metrics["support"]["tumor"] > 0)
        else:  # nothing to choose between epochs: last.pt is the model
            metrics, validation_loss, score = UNSCORED, math.nan, math.nan
        improved = score > best_score
        if improved:
            best_score, stale = score, 0
        else:
            stale += 1
        if scheduler is not None:
            scheduler.step()
        seconds = time.perf_counter() - epoch_began
        epoch_seconds.append(seconds)
        record = {
            "event": "epoch",
            "epoch": epoch,
            "epochs": config.epochs,
            "loss": float(totals[0] / max(float(totals[1]), 1.0)),
            "val_loss": validation_loss,
            "val_liver_dice": metrics["per_class"]["liver"]["dice"],
            "val_tumor_dice": metrics["per_class"]["tumor"]["dice"],
            "score": score,
            "best_score": best_score,
            "improved": improved,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "train_seconds": train_seconds,
            "slices_per_second": float(totals[1]) / train_seconds,
            "eta_seconds": float(np.mean(epoch_seconds)) * (config.epochs - epoch - 1),
        }
        history.append(record)
        log(record)
        if context.is_main:
            if improved:
                metadata.metrics = {
                    selection_part: metrics,
                    "epoch": epoch,
                    "selection": selection_part,
                    "parameters": count_parameters(network),
                    "recipe": recipe,
                }
                save_checkpoint(out / "best.pt", network, metadata)
            training_state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "scaler": scaler.state_dict() if use_amp else {},
                "epoch": epoch,
                "best_score": best_score,
                "stale": stale,
                "history": history,
                "config": recipe,
            }
            save_checkpoint(out / "last.pt", network, metadata, training_state)
            write_history(out / "history.csv", history)
            write_curves(history, out / "curves.png")
        context.barrier()
        if stale >= config.patience:
            log({"event": "early_stop", "epoch": epoch, "best_score": best_score})
            break
    if finished == "done":
        registered = None
        if context.is_main and config.register_as and (out / "best.pt").is_file():
            registered = _register(out / "best.pt", config.register_as)
        log(
            {
                "event": "done",
                "best": _existing(out / "best.pt"),  # None: no epoch gave a usable score
                "last": _existing(out / "last.pt"),
                "best_score": best_score,
                "registered": registered,
            }
        )
    return out / "best.pt"


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_function: nn.Module,
    epoch: int,
    device: torch.device,
    context: DistributedContext,
    stop: StopRequest,
    log: Log,
) -> tuple[float, int, bool]:
    """One pass over the training slices: (summed loss, slices seen, stopped early)."""
    began = last_report = time.perf_counter()
    model.train()
    loss_sum, seen = 0.0, 0
    steps = len(loader)
    for step, (inputs, targets) in enumerate(loader):
        inputs, targets = inputs.to(device), targets.to(device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=scaler.is_enabled()):
            logits = model(inputs)
        loss = loss_function(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += float(loss.detach()) * len(inputs)
        seen += len(inputs)
        now = time.perf_counter()
        if now - last_report >= 2.0 or step == steps - 1:
            last_report = now
            log(
                {
                    "event": "step",
                    "epoch": epoch,
                    "step": step + 1,
                    "steps": steps,
                    "loss": loss_sum / seen,
                    "eta_seconds": (now - began) / (step + 1) * (steps - step - 1),
                }
            )
        if context.any(stop.requested()):
            return loss_sum, seen, True
    return loss_sum, seen, False


def _existing(path: Path) -> str | None:
    """The path if the file exists: an event never names a file that is not there."""
    return str(path) if path.is_file() else None


def _register(checkpoint: Path, name: str) -> str:
    """Add a finished checkpoint to the user's catalog (Segment & Explain lists it).

    It is checked like every model import (metadata, finite weights): a diverged run is
    refused with a ``CheckpointError``, never listed.
    """
    register_checkpoint(
        checkpoint,
        name,
        lambda metadata: (
            f"{metadata.architecture} trained with LiverXAI on "
            f"{len(metadata.training_data)} case(s); {checkpoint.parent}."
        ),
    )
    return name
