"""A training run's settings checked before it starts; resuming it with the same settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..models.checkpoints import CheckpointMetadata
from .options import SINGLE_SLICE_STEP, options_problems

#: Settings that must not change when a run is resumed (epochs and patience may).
RESUME_INVARIANTS = (
    "architecture",
    "architecture_kwargs",
    "input_size",
    "num_slices",
    "slice_step_mm",
    "hu_window",
    "batch_size",
    "learning_rate",
    "schedule",
    "loss",
    "class_weights",
    "keep_empty_fraction",
    "augmentations",
    "seed",
)


def run_problems(config: Any) -> list[str]:
    """Every setting of a ``TrainConfig`` that cannot work, as messages for the user.

    The options go through the same checks as the ``train`` command's and the Training
    module's (``training_options.option_problem``); the network's settings through those of
    the checkpoint the run will write (``CheckpointMetadata.problems``), so a run never
    starts that could only end in a checkpoint nobody can load.
    """
    problems = options_problems(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.learning_rate,
        patience=config.patience,
        schedule=config.schedule,
        loss=config.loss,
        class_weights=config.class_weights,
        keep_empty=config.keep_empty_fraction,
        tumor_share=config.tumor_share,
        slice_step_mm=config.slice_step_mm,
        augment=config.augmentations,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
        workers=config.workers,
        device=config.device,
    )
    fractions = (config.validation_fraction, config.test_fraction)
    if not options_problems(validation_fraction=fractions[0], test_fraction=fractions[1]):
        if sum(fractions) >= 1:
            problems.append(
                f"The validation and test fractions must leave patients for training "
                f"(got {fractions[0]} + {fractions[1]})."
            )
    if config.slice_step_mm is not None and config.num_slices == 1:
        problems.append(SINGLE_SLICE_STEP)
    metadata = CheckpointMetadata(
        architecture=config.architecture,
        architecture_kwargs=config.architecture_kwargs,
        input_size=config.input_size,
        hu_window=config.hu_window,
        num_slices=config.num_slices,
        slice_step_mm=config.slice_step_mm,
    )
    problems += [f"{problem[0].upper()}{problem[1:]}." for problem in metadata.problems()]
    return problems


def check_resumable(last: dict, current: dict, out: Path) -> None:
    """Refuse to resume a run (``last``: its ``last.pt``) with other settings than it had."""
    saved = last.get("training_state", {}).get("config", {})
    changed = [
        f"{key}: {saved[key]} → {current.get(key)}"
        for key in RESUME_INVARIANTS
        if key in saved and saved[key] != current.get(key)
    ]
    if changed:
        raise InputError(
            f"Cannot resume {out}: these settings differ from the run's ("
            + "; ".join(changed)
            + "). Resume with the original settings or start a new output folder."
        )


def restore(
    last: dict, network: Any, optimizer: Any, scheduler: Any, scaler: Any
) -> tuple[int, float, int, list[dict]]:
    """Load ``last.pt``'s weights and training state; returns (next epoch, best score, epochs
    without improvement, history)."""
    network.load_state_dict(last["state_dict"])
    state = last["training_state"]
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return (
        int(state["epoch"]) + 1,
        float(state["best_score"]),
        int(state["stale"]),
        list(state["history"]),
    )
