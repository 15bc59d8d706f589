"""Write the results of :func:`.evaluation.evaluate_models` as Markdown, CSV and figures.

``metrics.md`` (one section per model: the papers' table, cross entropy, LiTS metrics, the
review score's AUC and precision, per-case rows and the figure; then a comparison table across
models), ``metrics.csv`` (long format:
model, scope, class, metric, value), ``per_case.csv`` (one row per model and case) and
``figures/<model>.png``. Every file is written atomically. Undefined values (NaN) read "n/a"
in Markdown and are left empty in CSV. The Markdown text comes from ``report_markdown.py``.

Class names in the CSV files: ``background``, ``liver`` (label 1, parenchyma) and ``tumor``
for the confusion-matrix metrics, ``mean`` for their macro mean, ``liver_organ`` (label >= 1,
as LiTS scores the liver) for the LiTS metrics of the liver, ``all`` for whole-model values.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ..constants import CLASS_NAMES
from ..explain.review_calibration import review_metric_rows
from ..io.atomic import atomic_path
from ..report.evaluation_figure import render_figure_grid
from .evaluate import safe_file_name
from .metrics import METRIC_NAMES
from .model_evaluation import ModelEvaluation
from .report_markdown import is_nan, markdown_report

PER_CASE_COLUMNS = (
    "model",
    "case",
    "liver_dice",
    "tumor_dice",
    "liver_hd95_mm",
    "tumor_hd95_mm",
    "true_lesions",
    "predicted_lesions",
    "detected_lesions",
    "false_positive_lesions",
    "cross_entropy",
    "seconds",
)
_CASE_FIELDS = ("case_id",) + PER_CASE_COLUMNS[2:]  # CaseEvaluation attributes


def _csv_value(value: float | int | str | None) -> str | int | float:
    if value is None or is_nan(value):
        return ""
    return value


def _figure_names(evaluations: Sequence[ModelEvaluation]) -> list[str]:
    """Distinct file stems for the models' figures."""
    names: list[str] = []
    for evaluation in evaluations:
        base = safe_file_name(evaluation.name)
        name, number = base, 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return names


def metric_rows(evaluation: ModelEvaluation) -> list[tuple[str, str, str, str, float | int]]:
    """Long-format rows ``(model, scope, class, metric, value)`` of one evaluation."""
    name, table = evaluation.name, evaluation.table
    rows: list[tuple[str, str, str, str, float | int]] = []
    for class_name in CLASS_NAMES:
        rows += [
            (name, "global", class_name, m, table["per_class"][class_name][m]) for m in METRIC_NAMES
        ]
    rows += [(name, "global", "mean", m, table["macro"][m]) for m in METRIC_NAMES]
    rows += [
        (name, "global", class_name, "cross_entropy", value)
        for class_name, value in evaluation.cross_entropy_per_class.items()
    ]
    counts = evaluation.lesion_counts
    rows += [
        (name, "global", "all", "pixel_accuracy", table["pixel_accuracy"]),
        (name, "global", "all", "cross_entropy", evaluation.cross_entropy),
        (name, "global", "all", "seconds_per_case", evaluation.seconds_per_case),
        (name, "global", "all", "seconds_total", evaluation.total_seconds),
        (name, "global", "liver_organ", "dice_global", evaluation.global_dice_liver),
        (name, "global", "liver_organ", "dice_per_case_mean", evaluation.mean_dice_liver),
        (name, "global", "liver_organ", "dice_per_case_sd", evaluation.sd_dice_liver),
        (name, "global", "liver_organ", "hd95_mm_mean", evaluation.mean_hd95_liver),
        (name, "global", "tumor", "dice_global", evaluation.global_dice_tumor),
        (name, "global", "tumor", "dice_per_case_mean", evaluation.mean_dice_tumor),
        (name, "global", "tumor", "dice_per_case_sd", evaluation.sd_dice_tumor),
        (name, "global", "tumor", "hd95_mm_mean", evaluation.mean_hd95_tumor),
        (name, "global", "tumor", "lesion_recall", evaluation.lesion_recall),
        (name, "global", "tumor", "lesion_precision", evaluation.lesion_precision),
    ]
    rows += [(name, "global", "tumor", f"{key}_lesions", value) for key, value in counts.items()]
    rows += [(name, *row) for row in review_metric_rows(evaluation.review)]
    for row in evaluation.per_case:
        case = row.case_id
        rows += [
            (name, case, "liver_organ", "dice", row.liver_dice),
            (name, case, "liver_organ", "hd95_mm", row.liver_hd95_mm),
            (name, case, "tumor", "dice", row.tumor_dice),
            (name, case, "tumor", "hd95_mm", row.tumor_hd95_mm),
            (name, case, "tumor", "true_lesions", row.true_lesions),
            (name, case, "tumor", "predicted_lesions", row.predicted_lesions),
            (name, case, "tumor", "detected_lesions", row.detected_lesions),
            (name, case, "tumor", "false_positive_lesions", row.false_positive_lesions),
            (name, case, "all", "cross_entropy", row.cross_entropy),
            (name, case, "all", "seconds", row.seconds),
        ]
    return rows


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV table atomically; None and NaN become empty cells."""
    with atomic_path(path, suffix=".csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(header)
            writer.writerows([[_csv_value(v) for v in row] for row in rows])


def write_report(evaluations: Sequence[ModelEvaluation], out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.md``, ``metrics.csv``, ``per_case.csv`` and one figure per model.

    Returns the written files keyed ``metrics_md``, ``metrics_csv``, ``per_case_csv`` and
    ``figure_<model>`` (the figure's file stem, e.g. ``figure_unet-demo`` for
    ``figures/unet-demo.png``). Models without figure data get no figure.
    """
    if not evaluations:
        raise ValueError("no evaluation to report")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    figures: list[str | None] = []
    for evaluation, stem in zip(evaluations, _figure_names(evaluations), strict=True):
        if evaluation.figure is None or not evaluation.figure.slices:
            figures.append(None)
            continue
        relative = f"figures/{stem}.png"
        written[f"figure_{stem}"] = render_figure_grid(evaluation, out_dir / relative)
        figures.append(relative)

    markdown = out_dir / "metrics.md"
    with atomic_path(markdown, suffix=".md") as temporary:
        temporary.write_text(markdown_report(evaluations, figures), encoding="utf-8")
    written["metrics_md"] = markdown

    long_rows = [row for evaluation in evaluations for row in metric_rows(evaluation)]
    write_csv(out_dir / "metrics.csv", ("model", "scope", "class", "metric", "value"), long_rows)
    written["metrics_csv"] = out_dir / "metrics.csv"

    case_rows = [
        [evaluation.name, *(getattr(row, column) for column in _CASE_FIELDS)]
        for evaluation in evaluations
        for row in evaluation.per_case
    ]
    write_csv(out_dir / "per_case.csv", PER_CASE_COLUMNS, case_rows)
    written["per_case_csv"] = out_dir / "per_case.csv"
    return written
