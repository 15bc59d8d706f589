"""One fold of a cross-validation run: skip it, or train, score and record it.

For held-out patient ``P`` the fold trains on every usable case of the other patients into
``DIR/fold-P/`` (continuing from its ``last.pt`` when interrupted), scores ``last.pt`` or
``best.pt`` on P's cases alone and writes ``DIR/fold-P/result.json``; a fold whose result says
done (with the same recipe and cases) is skipped. ``crossval.py`` runs the folds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import Cancelled, InputError
from ..models.checkpoints import read_checkpoint
from ..training.cases import CanonicalCase, Case
from ..training.stop_request import STOP_FILE, StopRequest
from ..training.trainer import TrainConfig, train
from . import crossval_report as report
from .evaluate import evaluate_models

if TYPE_CHECKING:
    from .crossval import CrossvalConfig, Log


class _StopEvent(threading.Event):
    """The evaluation's cancel event, also set by a stop request (``DIR/STOP``, a signal)."""

    def __init__(self, stop: StopRequest) -> None:
        super().__init__()
        self.stop = stop

    def is_set(self) -> bool:
        return super().is_set() or self.stop.requested()


def differences(saved: dict, current: dict) -> str:
    """The keys whose values differ, as "key: saved → current; ..." (empty if none)."""
    keys = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    return "; ".join(f"{k}: {saved.get(k)} → {current.get(k)}" for k in keys)


def run_fold(
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
    result.update(fold_seconds=time.perf_counter() - began, written=now())
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
    changed = differences({k: saved.get(k) for k in base}, base)
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


def now() -> str:
    """The current UTC time, to the second, as the ``written`` stamp of the files."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
