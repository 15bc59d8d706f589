"""The cross-validation's tables, rebuilt from the folds' results.

The per-case measures the folds record besides evaluation's (confusion matrix, tumour
volumes, false tumour, detection of large lesions) are :mod:`.crossval_measures`'s;
:func:`case_measures`, :func:`lesions_by_size` and :data:`LARGE_LESION_MM` stay importable
from here. A recall without true lesions and a precision without predicted lesions read n/a
(not 0 or 1), per case and pooled.

:func:`write_crossval_report` writes ``DIR/metrics.md`` (the recipe, a summary and one row per
case), ``DIR/metrics.csv`` (long format as ``evaluate`` writes it: model, scope, class, metric,
value; scope ``summary`` or the case) and ``DIR/per_case.csv`` (one row per case, also for
folds that are pending or failed), each atomically, from ``DIR/fold-*/result.json``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import LIVER, TUMOR
from ..errors import InputError
from ..io.atomic import atomic_path
from ..training.cases import Case
from .crossval_measures import (  # noqa: F401  (part of this module's interface)
    LARGE_LESION_MM,
    case_measures,
    lesions_by_size,
)
from .report import write_csv
from .surface_metrics import DETECTION_CRITERION

RESULT_FILE = "result.json"
POSTPROCESSING = "3D clean-up of Segment & Explain (as evaluate applies it)"
PER_CASE_COLUMNS = (
    "fold", "case", "status", "liver_dice", "tumor_dice", "liver_hd95_mm", "tumor_hd95_mm",
    "true_lesions", "predicted_lesions", "detected_lesions", "false_positive_lesions",
    "lesion_recall", "lesion_precision", "true_large_lesions", "detected_large_lesions",
    "predicted_large_lesions", "true_positive_large_lesions", "large_lesion_recall",
    "large_lesion_precision", "true_tumor_ml", "predicted_tumor_ml", "false_tumor_ml",
    "epochs_run", "training_seconds", "evaluation_seconds", "reason",
)  # fmt: skip


def fold_name(patient: str) -> str:
    """The fold folder of a patient: ``fold-<patient>`` made safe as a file name."""
    return "fold-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", patient).strip("._") or "patient")


# --- the folds --------------------------------------------------------------------------------


def finished_folds(
    run_dir: Path, event: str, log: Callable[[dict], None]
) -> Iterator[tuple[str, Path, dict, list[Case]]]:
    """Each finished fold of a crossval run: (patient, its scored checkpoint, the run's recipe,
    its held-out cases); folds not done are logged as skipped under ``event``."""
    run = read_json(run_dir / "crossval.json")
    if run is None:
        raise InputError(f"{run_dir} holds no cross-validation run (crossval.json is missing).")
    cases = {c["case_id"]: Case(**c) for c in run["cases"]}
    for patient, case_ids in run["folds"].items():
        folder = run_dir / fold_name(patient)
        result = read_json(folder / "result.json")
        if result is None or result.get("status") != "done":
            log({"event": event, "fold": patient, "status": "skipped: not done"})
            continue
        recipe = run.get("recipe", {})
        checkpoint = folder / f"{recipe.get('select', 'last')}.pt"
        yield patient, checkpoint, recipe, [cases[c] for c in case_ids]


# --- the rows and the summary -----------------------------------------------------------------


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def case_rows(out_dir: Path, run: dict) -> list[dict[str, Any]]:
    """One row per case of the run, in fold order; status done, failed or pending."""
    rows = []
    for patient, case_ids in run["folds"].items():
        result = read_json(Path(out_dir) / fold_name(patient) / RESULT_FILE)
        status = result.get("status", "pending") if result else "pending"
        if result and result.get("recipe") != run["recipe"]:
            status = "pending"  # made with another recipe: not this run's
        scored = {r["case_id"]: r for r in (result or {}).get("cases", [])}
        for case_id in case_ids:
            row: dict[str, Any] = {"fold": patient, "case": case_id, "status": status}
            if status == "failed":
                row["reason"] = result.get("reason", "")
            if status == "done" and case_id in scored:
                row.update(_case_values(scored[case_id], result))
            elif status == "done":
                row["status"] = "pending"
            rows.append(row)
    return rows


def _rate(numerator: int, denominator: int) -> float:
    """A detection rate; n/a (NaN) without anything to count, e.g. recall without tumour."""
    return numerator / denominator if denominator else math.nan


def _case_values(scored: dict, result: dict) -> dict[str, Any]:
    values = {k: scored.get(k) for k in PER_CASE_COLUMNS if k in scored}
    true_positives = scored["predicted_lesions"] - scored["false_positive_lesions"]
    values.update(
        liver_hd95_mm=_number(scored.get("liver_hd95_mm")),
        tumor_hd95_mm=_number(scored.get("tumor_hd95_mm")),
        lesion_recall=_rate(scored["detected_lesions"], scored["true_lesions"]),
        lesion_precision=_rate(true_positives, scored["predicted_lesions"]),
        large_lesion_recall=_rate(scored["detected_large_lesions"], scored["true_large_lesions"]),
        large_lesion_precision=_rate(
            scored["true_positive_large_lesions"], scored["predicted_large_lesions"]
        ),
        epochs_run=result.get("epochs_run"),
        training_seconds=result.get("training_seconds"),
        evaluation_seconds=result.get("evaluation_seconds"),
        confusion=np.asarray(scored["confusion"], dtype=np.int64),
    )
    return values


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _global_dice(tp: float, predicted: float, true: float) -> float:
    return 1.0 if predicted + true == 0 else 2.0 * tp / (predicted + true)


def summary(rows: list[dict[str, Any]]) -> list[tuple[str, str, float | int]]:
    """``(class, metric, value)`` over the cases scored (lesion rates pooled over them)."""
    done = [r for r in rows if r["status"] == "done"]
    with_tumor = [r for r in done if r["true_tumor_ml"] > 0]
    free = [r for r in done if r["true_tumor_ml"] == 0]
    cm = sum((r["confusion"] for r in done), np.zeros((3, 3), dtype=np.int64))
    n = {k: sum(r[k] for r in done) for k in PER_CASE_COLUMNS[7:11] + PER_CASE_COLUMNS[13:17]}
    liver = [r["liver_dice"] for r in done]
    nan = math.nan
    liver_global = _global_dice(cm[LIVER:, LIVER:].sum(), cm[:, LIVER:].sum(), cm[LIVER:].sum())
    tumor_global = _global_dice(cm[TUMOR, TUMOR], cm[:, TUMOR].sum(), cm[TUMOR].sum())
    true_positives = n["predicted_lesions"] - n["false_positive_lesions"]
    return [
        ("all", "cases_done", len(done)),
        ("all", "cases_pending", sum(r["status"] == "pending" for r in rows)),
        ("all", "cases_failed", sum(r["status"] == "failed" for r in rows)),
        ("liver_organ", "dice_per_case_mean", _mean(liver)),
        ("liver_organ", "dice_per_case_min", min(liver) if liver else nan),
        ("liver_organ", "dice_global", liver_global if done else nan),
        ("liver_organ", "hd95_mm_mean", _mean([r["liver_hd95_mm"] for r in done])),
        ("tumor", "dice_mean_cases_with_tumor", _mean([r["tumor_dice"] for r in with_tumor])),
        ("tumor", "dice_per_case_mean", _mean([r["tumor_dice"] for r in done])),
        ("tumor", "dice_global", tumor_global if done else nan),
        ("tumor", "lesion_recall", _rate(n["detected_lesions"], n["true_lesions"])),
        ("tumor", "lesion_precision", _rate(true_positives, n["predicted_lesions"])),
        (
            "tumor",
            "large_lesion_recall",
            _rate(n["detected_large_lesions"], n["true_large_lesions"]),
        ),
        (
            "tumor",
            "large_lesion_precision",
            _rate(n["true_positive_large_lesions"], n["predicted_large_lesions"]),
        ),
        ("tumor", "false_lesions_per_case", _mean([r["false_positive_lesions"] for r in done])),
        ("tumor", "false_tumor_ml_tumor_free_mean", _mean([r["false_tumor_ml"] for r in free])),
        ("tumor", "tumor_free_cases", len(free)),
        ("all", "training_seconds_total", sum(float(r["training_seconds"] or 0) for r in done)),
    ]


# --- the files --------------------------------------------------------------------------------

SUMMARY_TITLES = {
    "cases_done": "Cases scored",
    "cases_pending": "Cases pending",
    "cases_failed": "Cases failed",
    "dice_per_case_mean": "Dice per case, mean (LiTS)",
    "dice_per_case_min": "Dice per case, min",
    "dice_global": "Dice global (LiTS)",
    "hd95_mm_mean": "HD95 mean (mm)",
    "dice_mean_cases_with_tumor": "Dice, mean over cases with tumour",
    "lesion_recall": "Lesion recall (all sizes, pooled)",
    "lesion_precision": "Lesion precision (all sizes, pooled)",
    "large_lesion_recall": f"Lesion recall ≥ {LARGE_LESION_MM:g} mm (pooled)",
    "large_lesion_precision": f"Lesion precision ≥ {LARGE_LESION_MM:g} mm (pooled)",
    "false_lesions_per_case": "False-positive lesions per case",
    "false_tumor_ml_tumor_free_mean": "False tumour (mL), mean over tumour-free cases",
    "tumor_free_cases": "Tumour-free cases",
    "training_seconds_total": "Training seconds, all folds scored",
}
_CLASS_TITLES = {"all": "", "liver_organ": "Liver: ", "tumor": "Tumour: "}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
    return lines + ["| " + " | ".join(row) + " |" for row in cells]


def _case_cells(row: dict[str, Any]) -> list[str]:
    if row["status"] != "done":
        status = f"failed: {row.get('reason', '')}" if row["status"] == "failed" else "pending"
        return [row["fold"], row["case"], status] + ["—"] * 10
    return [
        row["fold"], row["case"], "done", _fmt(row["liver_dice"]), _fmt(row["tumor_dice"]),
        _fmt(row["liver_hd95_mm"], 1),
        f"{_fmt(row['lesion_recall'], 2)} / {_fmt(row['lesion_precision'], 2)}",
        f"{_fmt(row['large_lesion_recall'], 2)} / {_fmt(row['large_lesion_precision'], 2)}",
        f"{row['detected_lesions']}/{row['true_lesions']}",
        str(row["false_positive_lesions"]), _fmt(row["false_tumor_ml"], 2),
        str(row["epochs_run"]), _fmt(row["training_seconds"], 0),
    ]  # fmt: skip


def markdown_report(run: dict, rows: list[dict[str, Any]]) -> str:
    """The text of ``metrics.md``."""
    recipe = run["recipe"]
    selection = (
        "last.pt after the fixed number of epochs"
        if recipe.get("select") == "last"
        else "best.pt (best epoch on the training slices)"
    )
    lines = [
        "# LiverXAI leave-one-patient-out cross-validation",
        "",
        f"- Data: `{run['data']}`; {len(run['folds'])} folds (one per patient), {len(rows)} cases",
        f"- Recipe: `{json.dumps(recipe, sort_keys=True)}`",
        f"- Model scored: {selection}; no validation case, the held-out patient is only scored",
        f"- Post-processing: {POSTPROCESSING if recipe.get('postprocess') else 'none'}",
        f"- Lesions: {DETECTION_CRITERION}; large: longest axial diameter ≥ "
        f"{LARGE_LESION_MM:g} mm. False tumour: predicted lesions touching no true lesion.",
        f"- Written: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
    ]
    if run.get("excluded"):
        left_out = "; ".join(f"{case}: {why}" for case, why in run["excluded"].items())
        lines.append(f"- Left out of every fold: {left_out}")
    lines += ["", "## Summary", "", "Over the cases scored so far.", ""]
    lines += _table(
        ["Metric", "Value"],
        [[_CLASS_TITLES[c] + SUMMARY_TITLES[m], _fmt(v)] for c, m, v in summary(rows)],
    )
    lines += ["", "## Per case", ""]
    header = [
        "Fold", "Case", "Status", "Liver Dice", "Tumour Dice", "Liver HD95 (mm)",
        "Lesion recall / precision", f"≥ {LARGE_LESION_MM:g} mm recall / precision",
        "Detected / true lesions", "FP lesions", "False tumour (mL)", "Epochs", "Training s",
    ]  # fmt: skip
    lines += _table(header, [_case_cells(row) for row in rows])
    return "\n".join(lines) + "\n"


def read_json(path: Path) -> dict | None:
    """A JSON file's object; None if it is missing or unreadable (e.g. cut short)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically as strict JSON (NaN and infinity as null)."""
    with atomic_path(path, suffix=".json") as temporary:
        temporary.write_text(json.dumps(_json_ready(data), indent=2), encoding="utf-8")


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_crossval_report(out_dir: str | Path, run: dict) -> dict[str, Path]:
    """Rewrite ``metrics.md``, ``metrics.csv`` and ``per_case.csv`` from the folds' results."""
    out_dir = Path(out_dir)
    rows = case_rows(out_dir, run)
    markdown = out_dir / "metrics.md"
    with atomic_path(markdown, suffix=".md") as temporary:
        temporary.write_text(markdown_report(run, rows), encoding="utf-8")
    name = out_dir.name
    long_rows = [(name, "summary", c, m, v) for c, m, v in summary(rows)]
    for row in rows:
        long_rows.append((name, row["case"], "all", "status", row["status"]))
        long_rows += [
            (name, row["case"], _class_of(column), column, row[column])
            for column in PER_CASE_COLUMNS[3:-1]
            if column in row
        ]
    write_csv(out_dir / "metrics.csv", ("model", "scope", "class", "metric", "value"), long_rows)
    write_csv(
        out_dir / "per_case.csv",
        PER_CASE_COLUMNS,
        [[row.get(column) for column in PER_CASE_COLUMNS] for row in rows],
    )
    names = ("metrics.md", "metrics.csv", "per_case.csv")
    return {name.replace(".", "_"): out_dir / name for name in names}


def _class_of(column: str) -> str:
    if column.startswith("liver"):
        return "liver_organ"
    if column.endswith(("seconds", "epochs_run")):
        return "all"
    return "tumor"
