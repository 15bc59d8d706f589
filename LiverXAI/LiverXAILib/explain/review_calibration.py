"""Calibrate the review score (:mod:`review_score`) by leave-one-patient-out on a crossval run.

For each finished fold, the fold's model (``RUN/fold-<patient>/last.pt``) runs the product
pipeline (:func:`.pipeline.run_pipeline`: Grad-CAM of liver and tumour, the default
uncertainty) on its held-out patient's CT; every scored slice gets its features and its liver
Dice against the truth (liver organ, label >= 1).

The fit (:func:`fit`) is deliberately small, because six patients cannot support more:

1. every feature that alone ranks the fitting slices with Dice < 0.8 at AUC >= 0.6 is kept;
2. the score is the mean of the kept features, each standardised on the fitting slices
   (equal weights: a free logistic regression on five patients changed its weights from fold
   to fold and ranked a new patient's slices worse than any single feature);
3. a one-variable logistic regression turns the score into the probability that the slice's
   Dice is below 0.8 (it does not change the ranking);
4. the threshold is the probability that flags ``FLAG_SHARE`` of the fitting slices.

Leave-one-patient-out: for each patient, fit on the others and score that patient: per-case
AUC, the pooled AUC of the held-out scores, and the precision, recall and flagged share at
each fold's threshold. The final model is fitted the same way on every patient.

Usage: ``python -m LiverXAILib review-calibrate --run RUN --out FILE.json [--device D]``.
"""

from __future__ import annotations

import csv
import datetime
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import LIVER, TUMOR
from ..errors import InputError
from ..training.cases import CanonicalCase, load_canonical_case
from .review_score import FEATURES, ScoreModel, fit_logistic, roc_auc, weighted_terms

Log = Callable[[dict], None]
DICE_CUT = 0.8  # a slice is "poor" when its liver Dice is below this
FLAG_SHARE = 0.08  # the share of scored slices the threshold flags on the fitting cases
L2 = 1.0
MIN_FEATURE_AUC = 0.6  # a feature enters the score when it alone ranks the fitting slices
THRESHOLD_RULE = (
    f"the {1 - FLAG_SHARE:.0%} quantile of the fitted probabilities over the fitting cases' "
    f"scored slices, so that about {FLAG_SHARE:.0%} of liver slices are flagged"
)


def slice_dice(labels: np.ndarray, truth: np.ndarray, index: int) -> float:
    """Liver-organ (label >= 1) Dice of one slice; 1.0 when both are empty."""
    predicted, true = labels[index] >= LIVER, truth[index] >= LIVER
    total = int(predicted.sum()) + int(true.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & true).sum()) / total


def canonical_ijk_to_ras(spacing: Sequence[float]) -> np.ndarray:
    """An IJK-to-RAS matrix under which a canonical array is its own canonical form."""
    return np.diag([-float(spacing[2]), -float(spacing[1]), float(spacing[0]), 1.0])


def case_rows(
    engine: Any,
    canonical: CanonicalCase,
    cancel: threading.Event | None = None,
    methods: Sequence[str] = ("gradcam",),
) -> tuple[list[dict[str, Any]], Any]:
    """Run the product pipeline on one case with ``methods`` (the first is the one the
    features read; more give ``methodDisagreement``); one row per scored slice (canonical
    ``slice``, ``dice``, the features) and the pipeline's result."""
    from ..segment.pipeline import run_pipeline
    from ..segment.uncertainty import UncertaintySpec

    result = run_pipeline(
        canonical.image,
        canonical_ijk_to_ras(canonical.spacing),
        engine,
        (LIVER, TUMOR),
        tuple(methods),
        UncertaintySpec.from_name("tta"),
        cancel=cancel,
    )
    features = result.slice_features
    rules = _rule_severity(result)
    rows = []
    for row, index in enumerate(features.slices):
        values = dict(zip(FEATURES, features.values[row].tolist(), strict=True))
        dice = slice_dice(result.labels, canonical.labels, int(index))
        rows.append({"slice": int(index), "dice": dice, **values, "ruleSeverity": rules[index]})
    return rows, result


def _rule_severity(result: Any) -> np.ndarray:
    """Per canonical slice, the highest severity of the fixed rules' review list (0 when the
    rules list nothing): the list before the score, for comparison."""
    from ..segment.map_grid import labels_on_map_grid, map_spacing
    from .quality import review_list

    labels = labels_on_map_grid(result.labels, result.map_size)
    spacing = map_spacing(result.spacing, result.labels.shape[1:], result.map_size)
    severity = np.zeros(labels.shape[0])
    for item in review_list(result.heatmaps, labels, spacing, result.uncertainty):
        severity[item.slice] = max(severity[item.slice], item.severity)
    return severity


def run_rows(
    run_dir: Path,
    device: str,
    log: Log,
    cam_layer: str | None = None,
    methods: Sequence[str] = ("gradcam",),
) -> list[dict[str, Any]]:
    """Rows (with ``patient`` and ``case``) of every finished fold's held-out cases, with the
    Grad-CAM of ``cam_layer`` (default: each model's own) and ``methods``."""
    from ..evaluation import crossval_report as report
    from ..models.checkpoints import load_checkpoint
    from ..segment.inference import SliceInferenceEngine, choose_device

    rows: list[dict[str, Any]] = []
    folds = report.finished_folds(run_dir, "review-calibrate", log)
    for patient, checkpoint, _recipe, cases in folds:
        model, metadata = load_checkpoint(checkpoint)
        engine = SliceInferenceEngine(
            model,
            metadata.input_spec(),
            choose_device(device),
            cam_layer=cam_layer,
            tumor_bias=metadata.tumor_bias,
            min_tumor_ml=metadata.min_tumor_ml,
        )
        for case in cases:
            case_rows_, _ = case_rows(engine, load_canonical_case(case), methods=methods)
            rows += [{"patient": patient, "case": case.case_id, **row} for row in case_rows_]
            log({"event": "review-calibrate", "fold": patient, "case": case.case_id})
    if not rows:
        raise InputError(f"{run_dir}: no finished fold to calibrate on.")
    return rows


def _matrix(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([[_number(r.get(name)) for name in FEATURES] for r in rows], dtype=np.float64)
    poor = np.array([_number(r["dice"]) < DICE_CUT for r in rows])
    return values, poor


def _number(value: Any) -> float:
    return math.nan if value in (None, "") else float(value)


def fit(rows: Sequence[dict[str, Any]], calibration: dict[str, Any] | None = None) -> ScoreModel:
    """The score fitted on ``rows`` (see :func:`equal_weight_score`), its threshold flagging
    ``FLAG_SHARE`` of them."""
    values, poor = _matrix(rows)
    chosen = [name for name, auc in _single_aucs(values, poor).items() if auc >= MIN_FEATURE_AUC]
    chosen = chosen or list(FEATURES)
    mean, scale = _column_stats(values)
    weights = np.array([1.0 / len(chosen) if name in chosen else 0.0 for name in FEATURES])
    score = weighted_terms((values - mean) / scale, weights).sum(axis=1)
    score_mean, score_scale, (slope,), offset = fit_logistic(score[:, None], poor, L2)
    model = ScoreModel(
        list(FEATURES),
        mean.tolist(),
        scale.tolist(),
        (weights * float(slope) / float(score_scale[0])).tolist(),
        float(offset - slope * score_mean[0] / score_scale[0]),
        1.0,
    )
    model.threshold = float(np.quantile(model.probability(values), 1.0 - FLAG_SHARE))
    model.calibration = dict(calibration or {})
    return model


def _column_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the mean and standard deviation of its measured values (0 and 1 for a
    feature measured nowhere or constant)."""
    mean, scale = np.zeros(values.shape[1]), np.ones(values.shape[1])
    for j, column in enumerate(values.T):
        measured = column[np.isfinite(column)]
        if measured.size:
            mean[j] = measured.mean()
            scale[j] = measured.std() if measured.std() > 1e-9 else 1.0
    return mean, scale


def _single_aucs(values: np.ndarray, poor: np.ndarray) -> dict[str, float]:
    """Each feature's AUC alone (missing values as its median); NaN if measured nowhere."""
    out = {}
    for j, name in enumerate(FEATURES):
        column = values[:, j]
        measured = np.isfinite(column)
        if not measured.any():
            out[name] = math.nan
            continue
        filled = np.where(measured, column, np.median(column[measured]))
        out[name] = roc_auc(filled, poor)
    return out


def ranking_score(model: ScoreModel, values: np.ndarray) -> np.ndarray:
    """The model's score before the logistic step: the mean of the chosen standardised
    features (the probability is a rising function of it)."""
    coefficients = np.asarray(model.coefficients)
    return model.contributions(values).sum(axis=1) / coefficients.sum()


def _scores(probability: np.ndarray, poor: np.ndarray, threshold: float) -> dict[str, float]:
    flagged = probability >= threshold
    return {
        "slices": int(poor.size),
        "poorSlices": int(poor.sum()),
        "auc": roc_auc(probability, poor),
        "flaggedShare": float(flagged.mean()) if poor.size else math.nan,
        "precision": float(poor[flagged].mean()) if flagged.any() else math.nan,
        "recall": float(flagged[poor].mean()) if poor.any() else math.nan,
    }


def leave_one_patient_out(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per held-out patient and pooled: AUC, precision, recall and flagged share."""
    patients = list(dict.fromkeys(r["patient"] for r in rows))
    per_case, pooled_score, pooled_scoreoor, pooled_flag = {}, [], [], []
    for patient in patients:
        held = [r for r in rows if r["patient"] == patient]
        model = fit([r for r in rows if r["patient"] != patient])
        values, poor = _matrix(held)
        probability = model.probability(values)
        per_case[patient] = _scores(probability, poor, model.threshold)
        per_case[patient]["features"] = [
            name for name, c in zip(model.features, model.coefficients, strict=True) if c
        ]
        pooled_score.append(ranking_score(model, values))
        pooled_scoreoor.append(poor)
        pooled_flag.append(probability >= model.threshold)
    probability, poor = np.concatenate(pooled_score), np.concatenate(pooled_scoreoor)
    flagged = np.concatenate(pooled_flag)
    pooled = _scores(probability, poor, 0.5)
    pooled.update(
        flaggedShare=float(flagged.mean()),
        precision=float(poor[flagged].mean()) if flagged.any() else math.nan,
        recall=float(flagged[poor].mean()) if poor.any() else math.nan,
    )
    pooled["aucPerCaseMean"] = float(np.nanmean([c["auc"] for c in per_case.values()]))
    return {"perCase": per_case, "pooled": pooled}


def feature_aucs(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each feature alone as a score (pooled AUC; missing values as the median)."""
    return _single_aucs(*_matrix(rows))


def rules_auc(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fixed rules' severity as a score: pooled and per-case AUC (empty without it)."""
    if not rows or "ruleSeverity" not in rows[0]:
        return {}
    severity = np.array([_number(r["ruleSeverity"]) for r in rows])
    poor = _matrix(rows)[1]
    patients = np.array([r["patient"] for r in rows])
    return {
        "pooled": roc_auc(severity, poor),
        "perCase": {
            str(p): roc_auc(severity[patients == p], poor[patients == p])
            for p in dict.fromkeys(patients.tolist())
        },
    }


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """The per-slice rows as CSV."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows written by :func:`write_rows`."""
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def calibrate(rows: Sequence[dict[str, Any]], run_name: str, command: str) -> ScoreModel:
    """Leave-one-patient-out figures and the final model fitted on every patient."""
    lopo = leave_one_patient_out(rows)
    pooled = lopo["pooled"]
    patients = list(dict.fromkeys(r["patient"] for r in rows))
    date = datetime.date.today().isoformat()
    summary = (
        f"Calibrated {date} on {run_name} ({len(patients)} patients). Leave-one-patient-out: "
        f"AUC {pooled['auc']:.2f} pooled ({pooled['aucPerCaseMean']:.2f} mean per case) for "
        f"slice liver Dice < {DICE_CUT}; at the threshold {pooled['flaggedShare']:.0%} of "
        f"liver slices flagged, precision {pooled['precision']:.2f}."
    )
    calibration = {
        "summary": summary,
        "run": run_name,
        "date": date,
        "command": command,
        "cases": patients,
        "outcome": f"slice liver (organ) Dice < {DICE_CUT}",
        "scoredSlices": "slices with >= 50 pixels of predicted liver on the map grid",
        "threshold": THRESHOLD_RULE,
        "l2": L2,
        "leaveOnePatientOut": lopo,
        "singleFeatureAuc": feature_aucs(rows),
        "rulesAuc": rules_auc(rows),
    }
    return fit(rows, calibration)


def score_summary(rows: Sequence[dict[str, Any]], model: ScoreModel) -> dict[str, Any]:
    """How well ``model`` at its own threshold finds the slices with liver Dice < 0.8 among
    ``rows`` (with ``case``): pooled figures and the AUC per case (``aucPerCase``)."""
    if not rows:
        return {}
    values, poor = _matrix(rows)
    probability = model.probability(values)
    summary: dict[str, Any] = _scores(probability, poor, model.threshold)
    cases = np.array([r["case"] for r in rows])
    summary["aucPerCase"] = {
        str(case): roc_auc(probability[cases == case], poor[cases == case])
        for case in dict.fromkeys(cases.tolist())
    }
    summary["threshold"] = model.threshold
    return summary


_REVIEW_METRICS = {  # score_summary key -> metric name after "review_"
    "auc": "auc",
    "precision": "precision",
    "recall": "recall",
    "flaggedShare": "flagged_share",
    "slices": "slices",
    "poorSlices": "poor_slices",
    "threshold": "threshold",
}


def review_metric_rows(review: dict[str, Any]) -> list[tuple[str, str, str, float]]:
    """``(scope, class, metric, value)`` rows of a :func:`score_summary` for ``metrics.csv``."""
    rows = [
        ("global", "liver_organ", f"review_{metric}", review[key])
        for key, metric in _REVIEW_METRICS.items()
        if key in review
    ]
    return rows + [
        (case, "liver_organ", "review_auc", auc)
        for case, auc in review.get("aucPerCase", {}).items()
    ]


def review_markdown(review: dict[str, Any]) -> list[str]:
    """A :func:`score_summary` as a short paragraph of ``metrics.md`` (none when empty)."""
    if not review:
        return []

    def cell(value: float, digits: int = 2) -> str:
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"

    per_case = ", ".join(f"{case} {cell(auc)}" for case, auc in review["aucPerCase"].items())
    return [
        "### Review list",
        "",
        f"The review score ranks the liver slices with liver Dice < {DICE_CUT} at AUC "
        f"{cell(review['auc'])} (per case: {per_case}). At its threshold "
        f"({cell(review['threshold'], 3)}) it flags {review['flaggedShare']:.0%} of "
        f"{review['slices']} liver slices; precision {cell(review['precision'])} and recall "
        f"{cell(review['recall'])} for the {review['poorSlices']} slices with Dice < {DICE_CUT}.",
        "",
    ]
