"""Resuming a training run: only with the settings it was started with."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

#: Settings that must not change when a run is resumed (epochs and patience may).
RESUME_INVARIANTS = (
    "architecture",
    "architecture_kwargs",
    "input_size",
    "num_slices",
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


def check_resumable(saved: dict, current: dict, out: Path) -> None:
    """Refuse to resume a run with other settings than it was started with."""
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
