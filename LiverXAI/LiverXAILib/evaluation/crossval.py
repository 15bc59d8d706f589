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
It runs in one process (not under ``torchrun``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Cancelled, InputError
from ..io.atomic import check_writable_folder
from ..io.volumes import ijk_to_ras_from_image
from ..models.checkpoints import read_checkpoint
from ..training.cases import CanonicalCase, Case, discover_cases
from ..training.stop_request import STOP_FILE, StopRequest
from ..training.trainer import TrainConfig, json_log, train
from . import crossval_report as report
from .evaluate import evaluate_models

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


def geometry_problem(case: Case) -> str | None:
    """Why ``case``'s label cannot belong to its CT, from the file headers; None if it can.

    Grid and placement must agree as :func:`.data.load_canonical_case` requires (which also
    checks the label values when the case is read in full).
    """
    import SimpleITK as sitk

    readers = []
    for path in (case.image, case.label):
        if not path.is_file():
            return None  # a DICOM folder: checked when it is read
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            reason = str(error).split("sitk::ERROR:")[-1].strip().split("\n")[0]
            return f"cannot read {path.name}: {reason}"
        readers.append(reader)
    image, label = readers
    if label.GetDimension() != 3 or label.GetSize() != image.GetSize():
        return f"label {case.label.name} is {label.GetSize()} voxels, the CT {image.GetSize()}"
    if not np.allclose(*map(ijk_to_ras_from_image, (label, image)), atol=1e-3, rtol=1e-4):
        label_at, ct_at = (f"{r.GetSpacing()} mm at {r.GetOrigin()}" for r in (label, image))
        return f"label and CT have different geometry (label {label_at}, CT {ct_at}, or axes)"
    return None


class _StopEvent(threading.Event):
    """The evaluation's cancel event, also set by a stop request (``DIR/STOP``, a signal)."""

    def __init__(self, stop: StopRequest) -> None:
        super().__init__()
        self.stop = stop

    def is_set(self) -> bool:
        return super().is_set() or self.stop.requested()


def _differences(saved: dict, current: dict) -> str:
    keys = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    return "; ".join(f"{k}: {saved.get(k)} → {current.get(k)}" for k in keys)


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
    changed = _differences(saved.get("recipe", {}), recipe)
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
    excluded = {c.case_id: p for c in cases if (p := geometry_problem(c)) is not None}
    if excluded and not config.keep_going:
        case_id, problem = next(iter(excluded.items()))
        raise InputError(f"Case {case_id}: {problem}.")
    for case_id, problem in excluded.items():
        log({"event": "excluded", "case": case_id, "reason": problem})
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
    report.write_json(out / RUN_FILE, {**run, "written": _now()})
    log({"event": "crossval", "out": str(out), "folds": chosen, "patients": list(run["folds"])})
    report.write_crossval_report(out, run)
    status = 0
    try:
        with StopRequest(out) as stop:
            for patient in chosen:
                result = None if stop.requested() else _fold(config, run, patient, stop, log)
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


def _fold(
    config: CrossvalConfig, run: dict, patient: str, stop: StopRequest, log: Log
) -> dict | None:
    """Skip, run or record one fold; returns its result (None: stopped)."""
    folder = Path(config.out_dir) / report.fold_name(patient)
    cases, excluded = [Case(**c) for c in run["cases"]], run["excluded"]
    test = [c for c in cases if c.patient == patient]
    training = [c for c in cases if c.patient != patient and c.case_id not in excluded]
    base = {
        "patient": patient,
        "recipe": run["recipe"],
        "train_cases": [c.case_id for c in training],
        "test_cases": [c.case_id for c in test],
    }
    saved = _finished(folder, base)
    if saved is not None:
        log({"event": "fold", "fold": patient, "status": "skipped"})
        return saved
    log({"event": "fold", "fold": patient, "status": "start", "train": base["train_cases"]})

    def fold_log(record: dict) -> None:
        log({**record, "fold": patient})

    began = time.perf_counter()
    try:
        bad = [f"{c.case_id}: {excluded[c.case_id]}" for c in test if c.case_id in excluded]
        if bad:
            raise InputError("; ".join(bad))
        trained = _train_fold(config, folder, training, fold_log)
        if trained is None or stop.requested():
            return None
        scored = _evaluate_fold(config, folder, test, stop, fold_log)
    except Cancelled:
        return None
    except Exception as error:  # noqa: BLE001 - recorded with its reason, see keep_going
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        result = {**base, "status": "failed", "reason": reason}
    else:
        result = {**base, "status": "done", **trained, **scored}
    result.update(fold_seconds=time.perf_counter() - began, written=_now())
    report.write_json(folder / report.RESULT_FILE, result)
    report.write_crossval_report(Path(config.out_dir), run)
    log({"event": "fold", "fold": patient, "status": result["status"], **_brief(result)})
    return result


def _finished(folder: Path, base: dict) -> dict | None:
    """The fold's result if it is done; refused if made with another recipe or cases."""
    path = folder / report.RESULT_FILE
    saved = report.read_json(path)
    if saved is None or saved.get("status") != "done":
        return None
    changed = _differences({k: saved.get(k) for k in base}, base)
    if changed:
        raise InputError(
            f"{path} was made otherwise ({changed}); move it away to redo the fold, or choose "
            "another output folder."
        )
    return saved


def _brief(result: dict) -> dict:
    if result["status"] == "failed":
        return {"reason": result["reason"]}
    liver = {r["case_id"]: r["liver_dice"] for r in result["cases"]}
    return {"liver_dice": liver, "epochs_run": result["epochs_run"]}


def _train_fold(
    config: CrossvalConfig, folder: Path, training: list[Case], log: Log
) -> dict | None:
    """Train (or go on training) one fold; returns what it took, None if it was stopped."""
    if not training:
        raise InputError("no case left to train on")
    settings = config.train_settings()
    last = folder / "last.pt"
    state = read_checkpoint(last)["training_state"] if last.is_file() else None
    finished = state is not None and (
        int(state["epoch"]) + 1 >= settings["epochs"] or int(state["stale"]) >= settings["patience"]
    )
    if not finished:
        stop_file, fold_stop = Path(config.out_dir) / STOP_FILE, folder / STOP_FILE
        events: list[str] = []

        def relay(record: dict) -> None:
            if stop_file.exists() and not fold_stop.exists():
                fold_stop.touch()  # the trainer watches its own folder
            events.append(record.get("event", ""))
            log(record)

        others = ", ".join(sorted({c.patient for c in training}))
        fold_config = TrainConfig(
            out_dir=folder,
            train_cases=list(training),
            device=config.device,
            workers=config.workers,
            cache_dir=config.cache_dir,
            resume=last.is_file(),
            score_training_slices=config.select == "best",  # last.pt needs no scores
            notes=f"cross-validation {folder.name}: trained on {others}",
            **settings,
        )
        train(fold_config, log=relay)
        if "stopped" in events or not last.is_file():
            return None
        state = read_checkpoint(last)["training_state"]
    history = state.get("history", [])
    scored = [
        h for h in history if isinstance(h.get("score"), (int, float)) and np.isfinite(h["score"])
    ]
    return {
        "epochs_run": len(history),
        "training_seconds": float(sum(float(h.get("seconds", 0.0)) for h in history)),
        "best_epoch": int(max(scored, key=lambda h: h["score"])["epoch"]) if scored else None,
    }


def _evaluate_fold(
    config: CrossvalConfig, folder: Path, test: list[Case], stop: StopRequest, log: Log
) -> dict:
    """Score the fold's model on the held-out cases only."""
    model = folder / f"{config.select}.pt"
    if not model.is_file():
        raise InputError(f"{model} is missing: the training gave no usable epoch.")
    measures: dict[str, dict] = {}

    def on_labels(_name: str, canonical: CanonicalCase, labels: np.ndarray) -> None:
        case = canonical.case.case_id
        measures[case] = report.case_measures(labels, canonical.labels, canonical.spacing)

    began = time.perf_counter()
    (evaluation,) = evaluate_models(
        [model],
        test,
        device=config.device,
        postprocess=config.postprocess,
        figure_slices=0,
        review_score=False,  # the review score is calibrated separately (review-calibrate)
        progress=log,
        cancel=_StopEvent(stop),
        on_labels=on_labels,
    )
    return {
        "model": model.name,
        "device": evaluation.device,
        "cases": [{**asdict(row), **measures[row.case_id]} for row in evaluation.per_case],
        "evaluation_seconds": time.perf_counter() - began,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
