"""Progress bar and status text of a training or evaluation run, folded from its events.

:class:`Progress` turns the JSON-line events of the trainer and of the evaluation (and the
exit event the runner adds) into a fraction and a message for the user.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

EXIT_EVENT = "exit"  # added by ChildProcess when the child has exited; not printed by it


def format_duration(seconds: float | None) -> str:
    """``"1 h 02 min"``, ``"3 min 05 s"`` or ``"42 s"``; empty for unknown."""
    if seconds is None or not seconds == seconds or seconds < 0:  # None or NaN
        return ""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@dataclasses.dataclass
class Progress:
    """What a progress bar and a status line show, updated event by event."""

    fraction: float = 0.0
    message: str = "Starting…"
    phase: str = "starting"
    epoch: int | None = None  # last finished epoch, counted from 0
    epochs: int | None = None
    eta_seconds: float | None = None
    excluded: list[str] = dataclasses.field(default_factory=list)  # cases left out

    def update(self, event: dict[str, Any]) -> None:
        """Fold one event (trainer, evaluation or the runner's exit event) into the state."""
        kind = event.get("event")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            handler(self, event)

    def _start(self, event: dict[str, Any]) -> None:
        """The run starts: the number of epochs, the network and the device."""
        self.phase, self.fraction = "starting", 0.0
        self.epochs = as_int(event.get("epochs"), self.epochs)
        self.message = f"Starting {event.get('arch', '')} on {event.get('device', '?')}…"

    def _split(self, event: dict[str, Any]) -> None:
        """The cases of each part of the split."""
        counts = [len(event.get(part) or []) for part in ("train", "validation", "test")]
        self.message = "Cases: {} training, {} validation, {} test.".format(*counts)
        if self.excluded:
            self.message += f" Left out (label does not fit its CT): {', '.join(self.excluded)}."

    def _excluded(self, event: dict[str, Any]) -> None:
        """A case is left out (``--keep-going``): its label does not fit its CT."""
        self.excluded.append(str(event.get("case", "?")))
        self.message = f"Left out case {event.get('case', '?')}: {event.get('reason', '')}."

    def _cache(self, event: dict[str, Any]) -> None:
        """A case's slices are being extracted (or found in the cache)."""
        self.phase = "data"
        index, total = as_int(event.get("index"), 0), max(as_int(event.get("total"), 1), 1)
        self.fraction = min((index + 1) / total, 1.0)
        verb = "Read cached" if event.get("cached") else "Preparing"
        self.message = f"{verb} case {event.get('case', '')} ({index + 1}/{total})…"

    def _data(self, event: dict[str, Any]) -> None:
        """The slices are ready: training begins."""
        self.phase, self.fraction = "training", 0.0
        self.message = (
            f"{event.get('train_slices', '?')} training and "
            f"{event.get('validation_slices', '?')} validation slices ready."
        )

    def _step(self, event: dict[str, Any]) -> None:
        """A training step: the share of all epochs done and this epoch's time left."""
        self.phase = "training"
        epoch, epochs = as_int(event.get("epoch"), 0), self.epochs or 1
        # "step" is the number of steps done in this epoch (1 … steps)
        step, steps = as_int(event.get("step"), 0), max(as_int(event.get("steps"), 1), 1)
        step = min(max(step, 0), steps)
        self.fraction = min((epoch + step / steps) / epochs, 1.0)
        self.eta_seconds = as_float(event.get("eta_seconds"))
        self.message = (
            f"Epoch {epoch + 1}/{epochs}, step {step}/{steps}, "
            f"loss {format_number(event.get('loss'))}" + self._eta(" in this epoch")
        )

    def _epoch(self, event: dict[str, Any]) -> None:
        """An epoch is done: its loss and validation Dice, and the time left."""
        self.phase = "training"
        self.epoch = as_int(event.get("epoch"), 0)
        self.epochs = as_int(event.get("epochs"), self.epochs) or self.epoch + 1
        self.fraction = min((self.epoch + 1) / self.epochs, 1.0)
        self.eta_seconds = as_float(event.get("eta_seconds"))
        best = " (best so far)" if event.get("improved") else ""
        self.message = (
            f"Epoch {self.epoch + 1}/{self.epochs}: loss {format_number(event.get('loss'))}, "
            f"validation Dice liver {format_number(event.get('val_liver_dice'))}, "
            f"tumour {format_number(event.get('val_tumor_dice'))}{best}" + self._eta()
        )

    def _early_stop(self, event: dict[str, Any]) -> None:
        """Early stopping ended the run."""
        self.phase, self.fraction = "finished", 1.0
        self.message = (
            f"Stopped early after epoch {as_int(event.get('epoch'), 0) + 1}: no improvement "
            f"(best score {format_number(event.get('best_score'))})."
        )

    def _resume(self, event: dict[str, Any]) -> None:
        """The run continues from ``last.pt``."""
        self.message = f"Resuming at epoch {as_int(event.get('epoch'), 0) + 1}…"

    def _stopped(self, event: dict[str, Any]) -> None:
        """A stop request ended the run."""
        self.phase = "stopped"
        self.message = (
            f"Stopped in epoch {as_int(event.get('epoch'), 0) + 1}. last.pt keeps the epochs "
            "finished before it; Train with Resume continues."
        )

    def _case(self, event: dict[str, Any]) -> None:
        """The evaluation scored a case."""
        self.phase = "evaluating"
        index, total = as_int(event.get("index"), 0), max(as_int(event.get("total"), 1), 1)
        self.fraction = min((index + 1) / total, 1.0)
        self.message = f"Evaluating {event.get('case', '')} ({index + 1}/{total})…"

    def _done(self, event: dict[str, Any]) -> None:
        """The training (best checkpoint) or the evaluation (metrics file) is done."""
        self.phase, self.fraction, self.eta_seconds = "finished", 1.0, None
        if "best" in event:
            registered = event.get("registered")
            self.message = f"Done. Best checkpoint: {event.get('best')} " + (
                f"(score {format_number(event.get('best_score'))})."
                + (f" Listed in Segment & Explain as {registered!r}." if registered else "")
            )
        else:
            self.message = f"Evaluation done: {event.get('metrics_md', '')}"

    def _error(self, event: dict[str, Any]) -> None:
        """The run reported an error."""
        self.phase = "failed"
        self.message = f"Error: {event.get('message', '')}"

    def _exit(self, event: dict[str, Any]) -> None:
        """The child exited: a failure unless it exited with 0."""
        code = event.get("returncode")
        if code != 0 and self.phase != "failed":
            self.phase = "failed"
            self.message = f"The process exited with code {code}."
        elif code == 0 and self.phase not in ("finished", "stopped"):
            self.phase = "finished"

    def _eta(self, scope: str = "") -> str:
        if self.eta_seconds is None or not self.eta_seconds >= 0.5:
            return ""
        return f" — {format_duration(self.eta_seconds)} left{scope}"


#: What each kind of event does to the progress; other events leave it as it is.
_HANDLERS: dict[Any, Callable[[Progress, dict[str, Any]], None]] = {
    "start": Progress._start,
    "excluded": Progress._excluded,
    "split": Progress._split,
    "cache": Progress._cache,
    "data": Progress._data,
    "step": Progress._step,
    "epoch": Progress._epoch,
    "early_stop": Progress._early_stop,
    "resume": Progress._resume,
    "stopped": Progress._stopped,
    "case": Progress._case,
    "done": Progress._done,
    "error": Progress._error,
    EXIT_EVENT: Progress._exit,
}


def as_int(value: Any, default: Any) -> Any:
    """``int(value)``, or ``default`` when it is not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def as_float(value: Any) -> float | None:
    """``float(value)``, or None when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def format_number(value: Any) -> str:
    """Three decimals, or a dash for a missing or NaN value."""
    number = as_float(value)
    return "—" if number is None or number != number else f"{number:.3f}"
