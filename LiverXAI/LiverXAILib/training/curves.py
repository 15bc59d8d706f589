"""Training records next to the checkpoints: ``history.csv`` and the ``curves.png`` figure."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ..io.atomic import atomic_path


def write_curves(history: Sequence[dict], path: str | Path) -> None:
    """Write ``curves.png``: training/validation loss (left), liver/tumour Dice (right)."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [row["epoch"] + 1 for row in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    loss_axes, dice_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [row["loss"] for row in history], label="training")
    loss_axes.plot(epochs, [row["val_loss"] for row in history], label="validation")
    loss_axes.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_axes.legend()
    for key, name in (("val_liver_dice", "liver"), ("val_tumor_dice", "tumour")):
        dice_axes.plot(epochs, [row[key] for row in history], label=name)
    dice_axes.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    dice_axes.legend()
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")


def write_history(path: str | Path, history: Sequence[dict]) -> None:
    """Write the epoch records as CSV (atomically)."""
    with (
        atomic_path(path, suffix=".csv") as temporary,
        open(temporary, "w", newline="", encoding="utf-8") as stream,
    ):
        writer = csv.DictWriter(stream, fieldnames=[k for k in history[0] if k != "event"])
        writer.writeheader()
        for row in history:
            writer.writerow({k: v for k, v in row.items() if k != "event"})
