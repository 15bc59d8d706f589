"""The Training module's options and the command lines of the trainer and the evaluation.

:class:`TrainingOptions` holds what the ``train`` command takes and checks it before anything
starts; :func:`build_train_command` and :func:`build_evaluate_command` turn options into the
``python -m LiverXAILib train|evaluate ...`` command lines that
:class:`~LiverXAILib.training_process.ChildProcess` runs. The choice lists mirror the trainer's
(``Testing/test_training_module.py`` keeps them equal).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from collections.abc import Sequence
from pathlib import Path

# Used only when the networks cannot be imported (torch missing); the trainer is the authority.
FALLBACK_ARCHITECTURES = ("unet", "vunet", "resunet", "multiresunet", "dcunet", "transunet")
AUGMENTATIONS = ("rotate", "flip", "zoom", "noise", "intensity")
INPUT_SIZES = (128, 256)
SLICE_COUNTS = (1, 3, 5)
LOSSES = ("dicece", "ce")
SCHEDULES = ("none", "step", "cosine")
DEVICES = ("auto", "cuda", "cpu")
EVALUATION_PARTS = ("test", "validation", "train", "all")


def available_architectures() -> list[str]:
    """Architecture names the trainer accepts (the network registry; a fallback without torch)."""
    if importlib.util.find_spec("torch") is not None:
        try:
            from .networks import available_models

            return list(available_models())
        except Exception:  # a broken torch install must not break the module's user interface
            pass
    return list(FALLBACK_ARCHITECTURES)


@dataclasses.dataclass
class TrainingOptions:
    """Everything the ``train`` command takes; field names follow its options."""

    data: str | Path
    out: str | Path
    arch: str = "unet"
    epochs: int = 50
    size: int = 128
    slices: int = 1
    loss: str = "dicece"
    batch_size: int = 16
    lr: float = 1e-3
    schedule: str = "none"
    patience: int = 15
    augment: Sequence[str] = ("rotate", "zoom", "noise", "intensity")  # empty: no augmentation
    keep_empty: float = 0.2
    device: str = "auto"
    cache: str | Path | None = None
    register: str | None = None  # catalog name for best.pt; None: not registered
    resume: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` with a message for the user if an option cannot work."""
        problems = []
        if not str(self.data).strip():
            problems.append("Choose the training data: a LiTS or MSD folder, or a CSV file.")
        elif not Path(self.data).exists():
            problems.append(f"Training data not found: {self.data}")
        if not str(self.out).strip():
            problems.append("Choose an output folder.")
        elif Path(self.out).exists() and not Path(self.out).is_dir():
            problems.append(f"The output folder is a file: {self.out}")
        if not str(self.arch).strip():
            problems.append("Choose an architecture.")
        for name, value, allowed in (
            ("input size", self.size, INPUT_SIZES),
            ("slices", self.slices, SLICE_COUNTS),
            ("loss", self.loss, LOSSES),
            ("schedule", self.schedule, SCHEDULES),
            ("device", self.device, DEVICES),
        ):
            if value not in allowed:
                problems.append(f"Unknown {name} {value!r}; choose one of {list(allowed)}.")
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            problems.append(f"Unknown augmentation {unknown}; choose from {list(AUGMENTATIONS)}.")
        if self.epochs < 1:
            problems.append("Train for at least one epoch.")
        if self.batch_size < 1:
            problems.append("The batch size must be at least 1.")
        if not self.lr > 0:
            problems.append("The learning rate must be positive.")
        if self.patience < 1:
            problems.append("The patience must be at least one epoch.")
        if not 0 <= self.keep_empty <= 1:
            problems.append("The fraction of slices without liver must lie in [0, 1].")
        if self.register is not None:
            problems += _model_name_problems(self.register)
        if self.resume and str(self.out).strip() and not (Path(self.out) / "last.pt").is_file():
            problems.append(f"Nothing to resume: {Path(self.out) / 'last.pt'} does not exist.")
        if problems:
            raise ValueError("\n".join(problems))


MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # what catalog.register_model accepts


def _model_name_problems(name: str) -> list[str]:
    from .catalog import CATALOG, read_catalog

    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        return [
            f"Model name {name!r}: use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        ]
    if any(entry["name"] == name for entry in read_catalog(CATALOG)):
        return [f"Model name {name!r} belongs to a bundled model; choose another."]
    return []


def default_model_name(out: str | Path) -> str:
    """A valid catalog name from the output folder's name (``runs/LiTS U-Net`` → ``LiTS-U-Net``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(out).strip()).name).strip("-._")[:64]
    return name or "liverxai-model"


def build_train_command(options: TrainingOptions, python: str = sys.executable) -> list[str]:
    """The ``python -m LiverXAILib train ...`` command line; every option is passed explicitly."""
    augment = [a for a in AUGMENTATIONS if a in set(options.augment)]
    command = [
        python,
        "-m",
        "LiverXAILib",
        "train",
        "--data",
        str(options.data),
        "--arch",
        options.arch,
        "--epochs",
        str(options.epochs),
        "--out",
        str(options.out),
        "--size",
        str(options.size),
        "--slices",
        str(options.slices),
        "--loss",
        options.loss,
        "--batch-size",
        str(options.batch_size),
        "--lr",
        repr(float(options.lr)),
        "--schedule",
        options.schedule,
        "--patience",
        str(options.patience),
        "--augment",
        ",".join(augment) if augment else "none",
        "--keep-empty",
        repr(float(options.keep_empty)),
        "--device",
        options.device,
    ]
    if options.cache is not None and str(options.cache).strip():
        command += ["--cache", str(options.cache)]
    if options.register is not None:
        command += ["--register", options.register]
    if options.resume:
        command.append("--resume")
    return command


def build_evaluate_command(
    models: str | Path | Sequence[str | Path],
    data: str | Path,
    out: str | Path,
    split: str | Path | None = None,
    part: str | None = None,
    device: str = "auto",
    python: str = sys.executable,
) -> list[str]:
    """The ``python -m LiverXAILib evaluate ...`` command line (one ``--model`` per model)."""
    if isinstance(models, (str, Path)):
        models = [models]
    if not models:
        raise ValueError("Choose at least one model to evaluate.")
    if part is not None and part not in EVALUATION_PARTS:
        raise ValueError(f"Unknown part {part!r}; choose one of {list(EVALUATION_PARTS)}.")
    if device not in DEVICES:
        raise ValueError(f"Unknown device {device!r}; choose one of {list(DEVICES)}.")
    command = [python, "-m", "LiverXAILib", "evaluate"]
    for model in models:
        command += ["--model", str(model)]
    command += ["--data", str(data), "--out", str(out)]
    if split is not None:
        command += ["--split", str(split)]
        if part is not None:
            command += ["--part", part]
    command += ["--device", device]
    return command
