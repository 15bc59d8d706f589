"""``python -m LiverXAILib crossval``: leave-one-patient-out cross-validation, resumable.

Usage::

    python -m LiverXAILib crossval --data CASES.csv --out DIR
        [--arch A --arch-option K=V --size S --slices N --epochs E --batch-size B --lr LR
         --schedule S --loss L --class-weights W --augment A --keep-empty F --patience P
         --seed N] [--select last|best] [--folds all|P1,P2,...] [--resume] [--keep-going]
        [--no-postprocess] [--device D --workers N --cache FOLDER]

``CASES.csv`` is what :func:`.data.discover_cases` reads (``image,label[,case][,patient]``);
one fold per patient. For held-out patient ``P`` a normal training run on every case of the
other patients (:func:`.training.train`) is written to ``DIR/fold-P/`` (``best.pt``,
``last.pt``, ``history.csv``, ...); that model is scored on P's cases alone by
:func:`.evaluation.evaluate_models` (the product's inference and 3D clean-up) plus the lesion
measures of :mod:`.crossval_report`, into ``DIR/fold-P/result.json`` (atomic; with the recipe,
the cases, the epochs run and the seconds spent). ``DIR/metrics.md``, ``metrics.csv`` and
``per_case.csv`` are rebuilt from those files after every fold (folds not done: "pending").

**Model selection** never looks at the held-out patient: a fold trains with no validation
case for the fixed ``--epochs`` (``--patience`` defaults to never stopping early) and its
``last.pt`` is scored (``--select last``). With five or so patients an inner validation
patient would take a fifth of the training data for a noisy one-patient choice, and a fixed
epoch count is what the final model, trained on every patient, can repeat exactly.
``--select best`` scores ``best.pt``, the trainer's choice on the (unaugmented) training slices.

**Resuming** (``--resume``): ``DIR/crossval.json`` holds the recipe (every option that shapes
the models and their scores); a different recipe is refused, naming the options that changed
(start a new ``DIR`` for a new recipe). A fold whose ``result.json`` says done is skipped
(after checking its recipe and training cases), a fold interrupted during training continues
from its ``last.pt``, a fold trained but not scored is only scored, a failed fold is retried.
``DIR/STOP`` or Ctrl-C/SIGTERM stops after the current training step or case (exit 1).

**Bad cases**: the headers of every CT and label are compared first; a label that does not
fit its CT is refused with the case and the reason (exit 2) before anything is written. A
fold that fails (e.g. unreadable labels) is recorded with its reason in its ``result.json``;
without ``--keep-going`` the command then stops with exit 2 naming the fold, its case and the
reason; with it the other folds go on, cases refused by the header check are left out of
every fold, and the command ends with exit 1.

Progress is printed as JSON lines: the trainer's and the evaluation's events with a ``fold``
key, and the run's own (crossval, excluded, fold: start/skipped/done/failed, stopped, done).
It runs in one process (not under ``torchrun``). One fold's work is in ``crossval_folds.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.atomic import check_writable_folder
from ..training.case_checks import unfit_cases
from ..training.cases import Case, discover_cases
from ..training.stop_request import STOP_FILE, StopRequest
from ..training.trainer import TrainConfig, json_log
from . import crossval_report as report
from .crossval_folds import differences, now, run_fold

Log = Callable[[dict], None]
RUN_FILE = "crossval.json"
#: ``TrainConfig`` fields a recipe may set (the rest are run settings or fixed per fold).
RECIPE_FIELDS = (
    "architecture", "architecture_kwargs", "input_size", "num_slices", "slice_step_mm",
    "hu_window", "epochs", "batch_size", "learning_rate", "schedule", "loss", "class_weights",
    "keep_empty_fraction", "tumor_share", "augmentations", "patience", "seed",
)  # fmt: skip


@dataclass
class CrossvalConfig:
    """One cross-validation run; ``training`` holds ``TrainConfig`` fields (``RECIPE_FIELDS``)."""

    data: Path
    out_dir: Path
    training: dict[str, Any] = field(default_factory=dict)
    select: str = "last"  # "last": last.pt after the fixed epochs; "best": best.pt
    postprocess: bool = True
    folds: list[str] | None = None  # patients to run; None: all
    resume: bool = False
    keep_going: bool = False
    device: str = "auto"
    workers: int = 0
    cache_dir: Path | None = None

    def train_settings(self) -> dict[str, Any]:
        """The ``TrainConfig`` fields of every fold; no patience: never stop early."""
        unknown = sorted(set(self.training) - set(RECIPE_FIELDS))
        if unknown:
            raise ValueError(f"Not recipe settings: {unknown}")
        settings = {k: v for k, v in asdict(TrainConfig(Path("."))).items() if k in RECIPE_FIELDS}
        settings.update(self.training)
        if self.training.get("patience") is None:
            settings["patience"] = settings["epochs"]
        return settings

    def recipe(self) -> dict[str, Any]:
        """Everything that shapes the fold models and their scores, JSON-ready."""
        recipe = {**self.train_settings(), "select": self.select, "postprocess": self.postprocess}
        return json.loads(json.dumps(recipe))


def _check_run_file(config: CrossvalConfig, recipe: dict) -> None:
    """Refuse a used ``DIR`` without ``--resume``, and a resume with another recipe."""
    saved = report.read_json(Path(config.out_dir) / RUN_FILE)
    if saved is None:
        return
    if not config.resume:
        raise InputError(
            f"{config.out_dir} already holds a cross-validation run ({RUN_FILE}); pass "
            "--resume to continue it or choose another output folder."
        )
    changed = differences(saved.get("recipe", {}), recipe)
    if changed:
        raise InputError(
            f"Cannot resume {config.out_dir}: the recipe differs from the run's ({changed}). "
            "Resume with the original options or choose another output folder."
        )


def _select_folds(groups: dict[str, list[Case]], wanted: list[str] | None) -> list[str]:
    if len(groups) < 2:
        raise InputError(
            f"Cross-validation needs two patients or more; the data hold {len(groups)}."
        )
    unknown = [p for p in wanted or [] if p not in groups]
    if unknown:
        raise InputError(
            f"--folds: unknown patient(s) {', '.join(unknown)}; the patients are "
            f"{', '.join(groups)}."
        )
    return [p for p in groups if not wanted or p in wanted]


def _prepare(config: CrossvalConfig, log: Log) -> tuple[dict, list[str]]:
    """Check everything before any work; returns the run's record and the folds to run."""
    problems = TrainConfig(Path("."), **config.train_settings()).problems()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        problems.append("Run crossval in one process, not under torchrun.")
    if problems:
        raise ValueError(" ".join(problems))
    if config.select not in ("last", "best"):
        raise ValueError(f"Unknown model selection {config.select!r}; choose last or best.")
    recipe = config.recipe()
    cases = discover_cases(config.data)
    patients = dict.fromkeys(c.patient for c in cases)  # in the order they first appear
    groups = {p: [c for c in cases if c.patient == p] for p in patients}
    chosen = _select_folds(groups, config.folds)
    check_writable_folder(config.out_dir)
    _check_run_file(config, recipe)
    excluded = unfit_cases(cases, config.keep_going, log)
    run = {
        "data": str(config.data),
        "recipe": recipe,
        "folds": {p: [c.case_id for c in group] for p, group in groups.items()},
        "cases": [c.to_dict() for c in cases],
        "excluded": excluded,
    }
    return run, chosen


def run_crossval(config: CrossvalConfig, log: Log | None = None) -> int:
    """Run the chosen folds (see the module docstring); returns the exit status.

    0: every chosen fold is done; 1: stopped, or a fold failed with ``keep_going``. Raises
    ``InputError`` (exit 2) for unusable data or options, a changed recipe, or a failed fold
    without ``keep_going``; ``ValueError`` for impossible settings.
    """
    log = log or json_log
    out = Path(config.out_dir)
    run, chosen = _prepare(config, log)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / RUN_FILE, {**run, "written": now()})
    log({"event": "crossval", "out": str(out), "folds": chosen, "patients": list(run["folds"])})
    report.write_crossval_report(out, run)
    status = 0
    try:
        with StopRequest(out) as stop:
            for patient in chosen:
                result = None if stop.requested() else run_fold(config, run, patient, stop, log)
                if result is None:
                    log({"event": "stopped", "fold": patient})
                    return 1
                if result["status"] == "failed":
                    status = 1
                    if not config.keep_going:
                        held_out = ", ".join(result["test_cases"])
                        raise InputError(
                            f"Fold {patient} (held-out case {held_out}) failed: {result['reason']}"
                        )
    finally:
        report.write_crossval_report(out, run)
        (out / STOP_FILE).unlink(missing_ok=True)
    log({"event": "done", "metrics_md": str(out / "metrics.md"), "status": status})
    return status
