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

Progress is printed as JSON lines (one object per line with an ``event`` key: start, excluded,
split, cache, data, resume, step, epoch, early_stop, stopped, done). ``OUT`` receives ``best.pt``
(best validation score), ``last.pt`` (every epoch; ``resume=True`` continues from it, so a
crash loses at most one epoch), ``history.csv`` and ``curves.png``. Creating ``OUT/STOP`` (or
SIGTERM / SIGINT) stops after the current step, keeping the last finished epoch.

This module prepares a run; the split and the datasets come from ``run_data.py``, the epoch
loop and the checkpoints it writes from ``epochs.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..constants import CLASS_NAMES, DEFAULT_HU_WINDOW
from ..errors import InputError
from ..models.checkpoints import CheckpointMetadata, read_checkpoint
from ..models.download import register_checkpoint
from ..models.networks import build_model
from .cases import Case, DataSplit
from .distributed import DistributedContext, distributed_context
from .epochs import EpochState, TrainingSession, run_epochs
from .losses import build_loss
from .options import DEFAULT_AUGMENTATIONS, SCHEDULES
from .resume import check_resumable, restore, run_problems
from .run_data import open_datasets, selection_part, split_for_run
from .slice_dataset import SliceDataset
from .stop_request import STOP_FILE, StoppedWhilePreparing, StopRequest

Log = Callable[[dict], None]


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
    keep_going: bool = False  # leave out cases whose label does not fit their CT
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
    """The run in every process: prepare the output, split, data and network, then train."""
    out = Path(config.out_dir)
    _prepare_output(config, out)
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
    split = split_for_run(config, context, log)
    try:
        train_set, validation_set = open_datasets(config, split, context, log, stop)
    except StoppedWhilePreparing:
        log({"event": "stopped", "epoch": None})
        return out / "best.pt"
    session = _session(config, split, (train_set, validation_set), context, device, log, stop)
    state = _resume_state(session)
    if run_epochs(session, state) == "done":
        _log_done(config, context, state.best_score, log)
    return out / "best.pt"


def _recipe(config: TrainConfig) -> dict:
    """The run's settings, JSON-ready: stored in the checkpoints, compared when resuming."""
    return json.loads(json.dumps(asdict(config), default=str))


def _prepare_output(config: TrainConfig, out: Path) -> None:
    """Refuse a used folder without ``resume`` and create it; when resuming, ``last.pt`` must
    have been made with the same recipe."""
    if not config.resume and (out / "last.pt").is_file():
        raise InputError(
            f"{out} already holds a training run (last.pt); pass --resume to continue it or "
            "choose another output folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    if config.resume and (out / "last.pt").is_file():
        check_resumable(read_checkpoint(out / "last.pt"), _recipe(config), out)


def _session(
    config: TrainConfig,
    split: DataSplit,
    datasets: tuple[SliceDataset, SliceDataset],
    context: DistributedContext,
    device: torch.device,
    log: Log,
    stop: StopRequest,
) -> TrainingSession:
    """Build the network, its optimiser, scheduler, scaler and loss, and the checkpoints'
    metadata: everything the epochs work with."""
    kwargs = {"in_channels": config.num_slices, "num_classes": len(CLASS_NAMES)}
    kwargs.update(config.architecture_kwargs)
    network = build_model(config.architecture, **kwargs).to(device)
    model: nn.Module = network
    if context.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    use_amp = device.type == "cuda"
    return TrainingSession(
        config=config,
        context=context,
        log=log,
        stop=stop,
        out=Path(config.out_dir),
        device=device,
        recipe=_recipe(config),
        network=network,
        model=model,
        optimizer=optimizer,
        scheduler=_scheduler(optimizer, config),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        use_amp=use_amp,
        loss_function=build_loss(config.loss, config.class_weights).to(device),
        metadata=_metadata(config, kwargs, split),
        train_set=datasets[0],
        validation_set=datasets[1],
        selection_part=selection_part(split),
        scored=bool(split.validation) or config.score_training_slices,
    )


def _metadata(config: TrainConfig, kwargs: dict, split: DataSplit) -> CheckpointMetadata:
    """The metadata of the run's checkpoints (the epoch's metrics are added when saved)."""
    return CheckpointMetadata(
        architecture=config.architecture,
        architecture_kwargs=kwargs,
        input_size=tuple(config.input_size),
        hu_window=tuple(config.hu_window),
        num_slices=config.num_slices,
        slice_step_mm=config.slice_step_mm,
        training_data=[f"{c.image.parent.name}/{c.image.name}" for c in split.train],
        notes=config.notes,
    )


def _resume_state(session: TrainingSession) -> EpochState:
    """A fresh state, or the one in ``last.pt`` (weights and optimiser restored) when resuming."""
    out = session.out
    state = EpochState()
    if session.config.resume and (out / "last.pt").is_file():
        last = read_checkpoint(out / "last.pt")
        state.start_epoch, state.best_score, state.stale, state.history = restore(
            last, session.network, session.optimizer, session.scheduler, session.scaler
        )
        session.log({"event": "resume", "epoch": state.start_epoch})
    return state


def _log_done(
    config: TrainConfig, context: DistributedContext, best_score: float, log: Log
) -> None:
    """Register ``best.pt`` if asked, then log the "done" event naming the files there are."""
    out = Path(config.out_dir)
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
