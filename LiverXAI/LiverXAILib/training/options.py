"""The training options: their choices, their checks, and the trainer's command lines.

This module imports nothing heavy (no torch, numpy or MONAI): the command line's ``--help``
and the Training module's user interface use it before torch is loaded. It is the one place
where the training options are checked: the ``train`` command's argparse types
(``cli_training``), :meth:`TrainingOptions.validate` (the Training module) and
``TrainConfig.problems`` (the trainer itself) all call :func:`option_problem`, so a bad value
is refused with the same message wherever it comes from.

:func:`build_train_command` and :func:`build_evaluate_command` turn options into the
``python -m LiverXAILib train|evaluate ...`` command lines that
:class:`~LiverXAILib.training.process.ChildProcess` runs. The choice lists mirror the
trainer's registries (``Testing/test_training.py`` keeps them equal).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: ``networks.available_models()`` (sorted), kept equal by a test; no torch needed to list them.
ARCHITECTURES = ("dcunet", "multiresunet", "resunet", "transunet", "unet", "vunet")
FALLBACK_ARCHITECTURES = ARCHITECTURES  # the earlier name
AUGMENTATIONS = ("rotate", "flip", "zoom", "noise", "intensity", "contrast", "gamma", "lesion")
DEFAULT_AUGMENTATIONS = ("rotate", "zoom", "noise", "intensity")
INPUT_SIZES = (128, 256)
SLICE_COUNTS = (1, 3, 5)
LOSSES = ("dicece", "ce", "tversky", "dicefocal")
SCHEDULES = ("none", "step", "cosine")
DEVICES = ("auto", "cuda", "cpu")
EVALUATION_PARTS = ("test", "validation", "train", "all")

#: Where the trainer caches slices unless told otherwise (``slice_cache`` uses the same rule).
CACHE_ENVIRONMENT = "LIVERXAI_CACHE"
CACHE_SUBFOLDER = ("liverxai", "slices")
CACHE_DEFAULT_TEXT = (
    "$LIVERXAI_CACHE, else $XDG_CACHE_HOME/liverxai/slices, else ~/.cache/liverxai/slices"
)


def default_cache_dir() -> Path:
    """Where training slices are cached unless a folder is given (see ``CACHE_DEFAULT_TEXT``)."""
    configured = os.environ.get(CACHE_ENVIRONMENT)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).joinpath(*CACHE_SUBFOLDER)


def available_architectures() -> list[str]:
    """Architecture names the trainer accepts (the network registry; the list without torch)."""
    if importlib.util.find_spec("torch") is not None:
        try:
            from ..models.networks import available_models

            return list(available_models())
        except Exception:  # a broken torch install must not break the module's user interface
            pass
    return list(ARCHITECTURES)


def parse_augmentations(text: str) -> tuple[str, ...]:
    """``"rotate,zoom"`` → ``("rotate", "zoom")``; ``"none"`` or ``""`` → ``()``.

    Accepts what ``augmentation.parse_augmentations`` accepts, without importing torch.
    Raises ``ValueError`` for an unknown name, listing the known ones.
    """
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    problem = option_problem("augment", names)
    if problem:
        raise ValueError(problem)
    return names


# --- The checks of single options -------------------------------------------------------------


def is_int(value: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _class_weights_ok(value: Any) -> bool:
    try:
        values = tuple(value)
    except TypeError:
        return False
    return (
        len(values) == 3
        and all(is_number(v) and v >= 0 for v in values)
        and any(v > 0 for v in values)
    )


def _choice(allowed: Sequence[Any], what: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in allowed), f"Unknown {what} {{value!r}}; choose one of {list(allowed)}."


#: option name (the ``train`` command's, with ``_``): (test, message for a value that fails it:
#: a format string of ``value`` or a function of it)
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str | Callable[[Any], str]]] = {
    "arch": _choice(ARCHITECTURES, "architecture"),
    "size": _choice(INPUT_SIZES, "input size"),
    "slices": _choice(SLICE_COUNTS, "slices"),
    "loss": _choice(LOSSES, "loss"),
    "schedule": _choice(SCHEDULES, "schedule"),
    "device": _choice(DEVICES, "device"),
    "augment": (
        lambda v: not isinstance(v, str) and set(v) <= set(AUGMENTATIONS),
        lambda v: (
            f"Unknown augmentation {[n for n in v if n not in AUGMENTATIONS]}; choose from "
            f"{list(AUGMENTATIONS)} or none."
        ),
    ),
    "epochs": (lambda v: is_int(v) and v >= 1, "Train for at least one epoch (got {value!r})."),
    "batch_size": (
        lambda v: is_int(v) and v >= 1,
        "The batch size must be at least 1 (got {value!r}).",
    ),
    "lr": (
        lambda v: is_number(v) and v > 0,
        "The learning rate must be positive and finite (got {value!r}).",
    ),
    "patience": (
        lambda v: is_int(v) and v >= 1,
        "The patience must be at least one epoch (got {value!r}); to never stop early, give "
        "at least the number of epochs.",
    ),
    "keep_empty": (
        lambda v: is_number(v) and 0 <= v <= 1,
        "The fraction of slices without liver must lie in [0, 1] (got {value!r}).",
    ),
    "tumor_share": (
        lambda v: v is None or (is_number(v) and 0 < v < 1),
        "The share of slices with tumour must lie strictly between 0 and 1 (got {value!r}).",
    ),
    "slice_step_mm": (
        lambda v: v is None or (is_number(v) and v > 0),
        "The slice step must be a distance in mm > 0 (got {value!r}).",
    ),
    "validation_fraction": (
        lambda v: is_number(v) and 0 <= v < 1,
        "The validation fraction must lie in [0, 1) (got {value!r}).",
    ),
    "test_fraction": (
        lambda v: is_number(v) and 0 <= v < 1,
        "The test fraction must lie in [0, 1) (got {value!r}).",
    ),
    "workers": (
        lambda v: is_int(v) and v >= 0,
        "The number of data-loading workers must be 0 or more (got {value!r}).",
    ),
    "class_weights": (
        _class_weights_ok,
        "The class weights must be three finite numbers >= 0, not all zero "
        "(background,liver,tumour; got {value!r}).",
    ),
}


#: A slice step without neighbours to place (the trainer's and ``crossval``'s check).
SINGLE_SLICE_STEP = (
    "A slice step (--slice-step-mm) places the neighbours of a 2.5D input; with one slice per "
    "input (--slices 1) there are none. Use --slices 3 or 5, or leave the step out."
)


def option_problem(name: str, value: Any) -> str | None:
    """The message for a value of option ``name`` that cannot work, or None if it can."""
    test, message = OPTION_RULES[name]
    try:
        accepted = bool(test(value))
    except TypeError:
        accepted = False
    if accepted:
        return None
    if callable(message):
        return message(value)
    return message.format(value=list(value) if isinstance(value, tuple) else value)


def options_problems(**values: Any) -> list[str]:
    """The messages of every option value given (by option name) that cannot work."""
    problems = (option_problem(name, value) for name, value in values.items())
    return [problem for problem in problems if problem is not None]


# --- The Training module's options ------------------------------------------------------------


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
    augment: Sequence[str] = DEFAULT_AUGMENTATIONS  # empty: no augmentation
    keep_empty: float = 0.2
    device: str = "auto"
    cache: str | Path | None = None
    register: str | None = None  # catalog name for best.pt; None: not registered
    resume: bool = False
    keep_going: bool = False  # leave out cases whose label does not fit their CT

    def problems(self) -> list[str]:
        """A message for the user for every option that cannot work (empty: all can)."""
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
        else:
            problems += options_problems(arch=self.arch)
        problems += options_problems(
            size=self.size,
            slices=self.slices,
            loss=self.loss,
            schedule=self.schedule,
            device=self.device,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            patience=self.patience,
            keep_empty=self.keep_empty,
            augment=self.augment,
        )
        if self.register is not None:
            problems += _model_name_problems(self.register)
        if self.resume and str(self.out).strip() and not (Path(self.out) / "last.pt").is_file():
            problems.append(f"Nothing to resume: {Path(self.out) / 'last.pt'} does not exist.")
        return problems

    def validate(self) -> None:
        """Raise ``ValueError`` with a message for the user if an option cannot work."""
        problems = self.problems()
        if problems:
            raise ValueError("\n".join(problems))


MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"  # what catalog.register_model accepts


def _model_name_problems(name: str) -> list[str]:
    from ..models.catalog import CATALOG, read_catalog

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
    if options.keep_going:
        command.append("--keep-going")
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
