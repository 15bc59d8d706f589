"""Write the results of :func:`.evaluation.evaluate_models` as Markdown, CSV and figures.

``metrics.md`` (one section per model: the papers' table, cross entropy, LiTS metrics, the
review score's AUC and precision, per-case rows and the figure; then a comparison table across
models), ``metrics.csv`` (long format:
model, scope, class, metric, value), ``per_case.csv`` (one row per model and case) and
``figures/<model>.png``. Every file is written atomically. Undefined values (NaN) read "n/a"
in Markdown and are left empty in CSV.

Class names in the CSV files: ``background``, ``liver`` (label 1, parenchyma) and ``tumor``
for the confusion-matrix metrics, ``mean`` for their macro mean, ``liver_organ`` (label >= 1,
as LiTS scores the liver) for the LiTS metrics of the liver, ``all`` for whole-model values.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from ..constants import CLASS_NAMES
from ..explain.review_calibration import review_markdown, review_metric_rows
from ..io.atomic import atomic_path
from ..report.evaluation_figure import render_figure_grid
from .evaluate import ModelEvaluation, safe_file_name
from .metrics import METRIC_NAMES
from .surface_metrics import DETECTION_CRITERION, HD95_DEFINITION

METRIC_TITLES = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "iou": "IoU",
    "dice": "Dice",
}
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
POSTPROCESSING = (
    "3D clean-up of Segment & Explain applied (largest liver component, holes filled, tumour "
    "kept within 5 mm of the liver)"
)


def _is_nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _fmt(value: float | int | None, digits: int = 3) -> str:
    """Markdown number: "n/a" for NaN/None, integers as they are."""
    if value is None or _is_nan(value):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _csv_value(value: float | int | str | None) -> str | int | float:
    if value is None or _is_nan(value):
        return ""
    return value


def _mean_sd(mean: float, sd: float) -> str:
    return _fmt(mean) if _is_nan(sd) else f"{_fmt(mean)} ± {_fmt(sd)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _parameters(count: int | None) -> str:
    if count is None:
        return "n/a"
    return f"{count / 1e6:.2f} M" if count >= 1e5 else str(count)


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


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in rows]
    return lines


def _model_section(evaluation: ModelEvaluation, figure: str | None) -> list[str]:
    table = evaluation.table
    height, width = evaluation.input_size
    lines = [
        f"## {evaluation.name}",
        "",
        f"- Checkpoint: `{evaluation.checkpoint}`",
        f"- Architecture: {evaluation.architecture}, {_parameters(evaluation.parameters)} "
        f"parameters, input {height}×{width}, {evaluation.num_slices} slice(s) per input",
        f"- Trained on: {'; '.join(evaluation.training_data) or 'not recorded'}",
        f"- Device: {evaluation.device}; {_fmt(evaluation.seconds_per_case, 2)} s per case "
        f"(segmentation and clean-up), {_fmt(evaluation.total_seconds, 1)} s in all",
        "",
        "### Pixel metrics (the papers' table)",
        "",
        "Voxels of all cases at the CT's resolution; liver = label 1 (parenchyma).",
        "",
    ]
    per_class_ce = evaluation.cross_entropy_per_class
    rows = [
        [name]
        + [_fmt(table["per_class"][name][m]) for m in METRIC_NAMES]
        + [_fmt(per_class_ce.get(name, math.nan), 4)]
        for name in CLASS_NAMES
    ]
    rows.append(
        ["mean"]
        + [_fmt(table["macro"][m]) for m in METRIC_NAMES]
        + [_fmt(evaluation.cross_entropy, 4)]
    )
    lines += _table(["Class"] + [METRIC_TITLES[m] for m in METRIC_NAMES] + ["Cross entropy"], rows)
    lines += [
        "",
        f"Pixel accuracy (all classes): {_fmt(table['pixel_accuracy'], 4)}. "
        f"Cross entropy: {_fmt(evaluation.cross_entropy, 4)} (mean over all pixels at the "
        f"network's input size {height}×{width}, targets resized by nearest neighbour; per "
        "class: mean over the pixels of that true class, row 'mean': over all pixels).",
        "",
        "### LiTS metrics",
        "",
        "Liver = organ (label >= 1), tumour = label 2.",
        "",
    ]
    counts = evaluation.lesion_counts
    true_positives = counts["predicted"] - counts["false_positive"]
    lines += _table(
        ["Metric", "Liver", "Tumour"],
        [
            [
                "Dice per case (mean ± sd)",
                _mean_sd(evaluation.mean_dice_liver, evaluation.sd_dice_liver),
                _mean_sd(evaluation.mean_dice_tumor, evaluation.sd_dice_tumor),
            ],
            ["Dice global", _fmt(evaluation.global_dice_liver), _fmt(evaluation.global_dice_tumor)],
            [
                "HD95 mean (mm)",
                _fmt(evaluation.mean_hd95_liver, 2),
                _fmt(evaluation.mean_hd95_tumor, 2),
            ],
        ],
    )
    lines += [
        "",
        f"Lesion detection: recall {_fmt(evaluation.lesion_recall)} ({counts['detected']} of "
        f"{counts['true']} true lesions detected), precision {_fmt(evaluation.lesion_precision)} "
        f"({true_positives} of {counts['predicted']} predicted lesions true, "
        f"{counts['false_positive']} false positives).",
        "",
        *review_markdown(evaluation.review),
        "### Per case",
        "",
    ]
    lines += _table(
        [
            "Case",
            "Liver Dice",
            "Tumour Dice",
            "Liver HD95 (mm)",
            "Tumour HD95 (mm)",
            "Lesions true / predicted / detected / FP",
            "CE",
            "Seconds",
        ],
        [
            [
                row.case_id,
                _fmt(row.liver_dice),
                _fmt(row.tumor_dice),
                _fmt(row.liver_hd95_mm, 2),
                _fmt(row.tumor_hd95_mm, 2),
                f"{row.true_lesions} / {row.predicted_lesions} / {row.detected_lesions} / "
                f"{row.false_positive_lesions}",
                _fmt(row.cross_entropy, 4),
                _fmt(row.seconds, 2),
            ]
            for row in evaluation.per_case
        ],
    )
    if figure is not None and evaluation.figure is not None:
        shown = ", ".join(str(i) for i in evaluation.figure.slices)
        lines += [
            "",
            f"![{evaluation.name}]({figure})",
            "",
            f"Figure: {evaluation.figure.case_id}, slices {shown}; Grad-CAM normalised once over "
            "the figure's slices.",
        ]
    return lines + [""]


def _comparison(evaluations: Sequence[ModelEvaluation]) -> list[str]:
    header = [
        "Model",
        "Architecture",
        "Parameters",
        "Trained on",
        "Liver Dice per case",
        "Liver Dice global",
        "Tumour Dice per case",
        "Tumour Dice global",
        "Liver HD95 (mm)",
        "Tumour HD95 (mm)",
        "Lesion recall",
        "Lesion precision",
        "CE",
        "s / case",
    ]
    rows = [
        [
            e.name,
            f"{e.architecture} ({e.input_size[0]}×{e.input_size[1]}, {e.num_slices} slice)",
            _parameters(e.parameters),
            "; ".join(e.training_data) or "not recorded",
            _fmt(e.mean_dice_liver),
            _fmt(e.global_dice_liver),
            _fmt(e.mean_dice_tumor),
            _fmt(e.global_dice_tumor),
            _fmt(e.mean_hd95_liver, 2),
            _fmt(e.mean_hd95_tumor, 2),
            _fmt(e.lesion_recall),
            _fmt(e.lesion_precision),
            _fmt(e.cross_entropy, 4),
            _fmt(e.seconds_per_case, 2),
        ]
        for e in evaluations
    ]
    return ["## Comparison of models", ""] + _table(header, rows) + [""]


def markdown_report(
    evaluations: Sequence[ModelEvaluation], figures: Sequence[str | None] | None = None
) -> str:
    """The text of ``metrics.md``; ``figures`` are the figure paths relative to it."""
    figures = list(figures) if figures is not None else [None] * len(evaluations)
    cases: list[str] = []
    for evaluation in evaluations:
        cases += [c for c in evaluation.cases if c not in cases]
    applied = {e.postprocessed for e in evaluations}
    postprocessing = (
        POSTPROCESSING
        if applied == {True}
        else "none (raw network labels)"
        if applied == {False}
        else "applied for " + ", ".join(e.name for e in evaluations if e.postprocessed)
    )
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# LiverXAI model evaluation",
        "",
        f"- Evaluated cases ({len(cases)}): {', '.join(cases)}",
        f"- Post-processing: {postprocessing}",
        f"- Models: {', '.join(e.name for e in evaluations)}",
        f"- Written: {stamp}",
        f"- HD95: {HD95_DEFINITION}; means ignore n/a.",
        f"- Lesions: {DETECTION_CRITERION}.",
        "- Dice per case and Dice global follow LiTS (Dice global = 2·ΣTP / Σ(|P| + |T|) over "
        "all cases). A class absent from both truth and prediction in a case scores Dice 1 "
        "and HD95 0 there, and the per-case means include these cases.",
        "",
    ]
    for evaluation, figure in zip(evaluations, figures, strict=True):
        lines += _model_section(evaluation, figure)
    lines += _comparison(evaluations)
    return "\n".join(lines)


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
