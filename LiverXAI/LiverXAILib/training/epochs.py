"""The epoch loop of a training run: train, score, record and save one epoch after another.

:func:`run_epochs` takes a prepared :class:`TrainingSession` (data, network, optimiser,
checkpoint metadata) and an :class:`EpochState` (where the run stands, restored from
``last.pt`` when resuming). Each epoch is one pass over the training slices, the selection
score on the validation slices (or the training slices), an ``epoch`` event, ``best.pt`` when
the score improved, ``last.pt``, ``history.csv`` and ``curves.png``. The loop ends after the
last epoch, on early stopping or on a stop request (after the current step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..models.checkpoints import CheckpointMetadata, save_checkpoint
from ..models.networks import count_parameters
from .curves import write_curves, write_history
from .distributed import DistributedContext
from .sampler import training_sampler
from .slice_dataset import SliceDataset
from .stop_request import StopRequest
from .validation import evaluate_dataset, selection_score

if TYPE_CHECKING:
    from .trainer import TrainConfig

Log = Callable[[dict], None]
#: The epoch's scores when nothing is scored (no validation cases, training slices not scored).
UNSCORED = {
    "per_class": {"liver": {"dice": math.nan}, "tumor": {"dice": math.nan}},
    "support": {"tumor": 0},
}


@dataclass
class TrainingSession:
    """What the epochs of one run work with; fixed once the run is prepared."""

    config: TrainConfig
    context: DistributedContext
    log: Log
    stop: StopRequest
    out: Path
    device: torch.device
    recipe: dict
    network: nn.Module  # the network itself (what checkpoints hold)
    model: nn.Module  # the network, or its distributed wrapper (what is trained)
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a learning-rate scheduler, or None
    scaler: torch.amp.GradScaler
    use_amp: bool
    loss_function: nn.Module
    metadata: CheckpointMetadata
    train_set: SliceDataset
    validation_set: SliceDataset
    selection_part: str  # "validation" or "training": the slices that choose best.pt
    scored: bool  # whether epochs are scored at all


@dataclass
class EpochState:
    """Where the run stands: the next epoch, the best score so far and the epochs' records."""

    start_epoch: int = 0
    best_score: float = -1.0
    stale: int = 0  # epochs without improvement
    history: list[dict] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


def run_epochs(session: TrainingSession, state: EpochState) -> str:
    """Train from ``state.start_epoch`` on; returns "done", or "stopped" on a stop request."""
    config, context = session.config, session.context
    per_rank_batch = max(1, math.ceil(config.batch_size / context.world_size))
    sampler = _sampler(session)
    for epoch in range(state.start_epoch, config.epochs):
        loader = _epoch_loader(session, sampler, epoch, per_rank_batch)
        epoch_began = time.perf_counter()
        loss_sum, seen, stopped = _train_epoch(session, loader, epoch)
        if stopped:
            session.log({"event": "stopped", "epoch": epoch})
            return "stopped"
        _finish_epoch(session, state, epoch, epoch_began, loss_sum, seen)
        if state.stale >= config.patience:
            session.log({"event": "early_stop", "epoch": epoch, "best_score": state.best_score})
            break
    return "done"


def _sampler(session: TrainingSession) -> Any:
    """The order of the training slices: shared out between processes, or drawn in one."""
    config, context = session.config, session.context
    if context.enabled:
        return DistributedSampler(
            session.train_set, context.world_size, context.rank, shuffle=True, seed=config.seed
        )
    return training_sampler(session.train_set, config.tumor_share, config.seed)


def _epoch_loader(
    session: TrainingSession, sampler: Any, epoch: int, per_rank_batch: int
) -> DataLoader:
    """The epoch's loader, with the sampler and the augmentation seeded for this epoch."""
    config = session.config
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(config.seed * 100_003 + epoch)
    session.train_set.reseed(config.seed * 100_003 + epoch * 101 + session.context.rank)
    return DataLoader(
        session.train_set, per_rank_batch, sampler=sampler, num_workers=config.workers
    )


def _train_epoch(
    session: TrainingSession, loader: DataLoader, epoch: int
) -> tuple[float, int, bool]:
    """One pass over the training slices: (summed loss, slices seen, stopped early)."""
    model, optimizer, scaler = session.model, session.optimizer, session.scaler
    began = last_report = time.perf_counter()
    model.train()
    loss_sum, seen = 0.0, 0
    steps = len(loader)
    for step, (inputs, targets) in enumerate(loader):
        inputs, targets = inputs.to(session.device), targets.to(session.device)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=scaler.is_enabled()):
            logits = model(inputs)
        loss = session.loss_function(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += float(loss.detach()) * len(inputs)
        seen += len(inputs)
        now = time.perf_counter()
        if now - last_report >= 2.0 or step == steps - 1:
            last_report = now
            session.log(
                {
                    "event": "step",
                    "epoch": epoch,
                    "step": step + 1,
                    "steps": steps,
                    "loss": loss_sum / seen,
                    "eta_seconds": (now - began) / (step + 1) * (steps - step - 1),
                }
            )
        if session.context.any(session.stop.requested()):
            return loss_sum, seen, True
    return loss_sum, seen, False


def _finish_epoch(
    session: TrainingSession,
    state: EpochState,
    epoch: int,
    epoch_began: float,
    loss_sum: float,
    seen: int,
) -> None:
    """Score a trained epoch, log its record and (main process) save its checkpoints."""
    train_seconds = time.perf_counter() - epoch_began
    totals = session.context.sum(torch.tensor([loss_sum, seen], dtype=torch.float64))
    metrics, validation_loss, score = _epoch_scores(session)
    improved = score > state.best_score
    if improved:
        state.best_score, state.stale = score, 0
    else:
        state.stale += 1
    if session.scheduler is not None:
        session.scheduler.step()
    seconds = time.perf_counter() - epoch_began
    state.epoch_seconds.append(seconds)
    record = {
        "event": "epoch",
        "epoch": epoch,
        "epochs": session.config.epochs,
        "loss": float(totals[0] / max(float(totals[1]), 1.0)),
        "val_loss": validation_loss,
        "val_liver_dice": metrics["per_class"]["liver"]["dice"],
        "val_tumor_dice": metrics["per_class"]["tumor"]["dice"],
        "score": score,
        "best_score": state.best_score,
        "improved": improved,
        "lr": session.optimizer.param_groups[0]["lr"],
        "seconds": seconds,
        "train_seconds": train_seconds,
        "slices_per_second": float(totals[1]) / train_seconds,
        "eta_seconds": float(np.mean(state.epoch_seconds)) * (session.config.epochs - epoch - 1),
    }
    state.history.append(record)
    session.log(record)
    if session.context.is_main:
        _save_epoch(session, state, epoch, metrics if improved else None)
    session.context.barrier()


def _epoch_scores(session: TrainingSession) -> tuple[dict, float, float]:
    """(metrics, validation loss, selection score) of the epoch; NaN when nothing is scored."""
    if not session.scored:  # nothing to choose between epochs: last.pt is the model
        return UNSCORED, math.nan, math.nan
    metrics, validation_loss = evaluate_dataset(
        session.network, session.validation_set, session.device, session.context
    )
    score = selection_score(metrics, tumor_present=metrics["support"]["tumor"] > 0)
    return metrics, validation_loss, score


def _save_epoch(
    session: TrainingSession, state: EpochState, epoch: int, best_metrics: dict | None
) -> None:
    """Write ``best.pt`` (when ``best_metrics``: the epoch improved), ``last.pt``, the history
    and the curves."""
    out, network, metadata = session.out, session.network, session.metadata
    scheduler = session.scheduler
    if best_metrics is not None:
        metadata.metrics = {
            session.selection_part: best_metrics,
            "epoch": epoch,
            "selection": session.selection_part,
            "parameters": count_parameters(network),
            "recipe": session.recipe,
        }
        save_checkpoint(out / "best.pt", network, metadata)
    training_state = {
        "optimizer": session.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": session.scaler.state_dict() if session.use_amp else {},
        "epoch": epoch,
        "best_score": state.best_score,
        "stale": state.stale,
        "history": state.history,
        "config": session.recipe,
    }
    save_checkpoint(out / "last.pt", network, metadata, training_state)
    write_history(out / "history.csv", state.history)
    write_curves(state.history, out / "curves.png")
