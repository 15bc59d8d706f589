"""The text of an evaluation's ``metrics.md``: one section per model, then a comparison.

Each model's section has the papers' table with the cross entropy, the LiTS metrics, the
review score's AUC and precision, the per-case rows and the figure. Undefined values (NaN,
None) read "n/a". ``report.py`` writes this text with the CSV files and the figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone

from ..constants import CLASS_NAMES
from ..explain.review_calibration import review_markdown
from .metrics import METRIC_NAMES
from .model_evaluation import ModelEvaluation
from .surface_metrics import DETECTION_CRITERION, HD95_DEFINITION

METRIC_TITLES = {
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "iou": "IoU",
    "dice": "Dice",
}

POSTPROCESSING = (
    "3D clean-up of Segment & Explain applied (largest liver component, holes filled, tumour "
    "kept within 5 mm of the liver)"
)


def is_nan(value: float) -> bool:
    """Whether ``value`` is a float NaN (other types never are)."""
    return isinstance(value, float) and math.isnan(value)


def _fmt(value: float | int | None, digits: int = 3) -> str:
    """Markdown number: "n/a" for NaN/None, integers as they are."""
    if value is None or is_nan(value):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _mean_sd(mean: float, sd: float) -> str:
    return _fmt(mean) if is_nan(sd) else f"{_fmt(mean)} ± {_fmt(sd)}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _parameters(count: int | None) -> str:
    if count is None:
        return "n/a"
    return f"{count / 1e6:.2f} M" if count >= 1e5 else str(count)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in rows]
    return lines


def _model_section(evaluation: ModelEvaluation, figure: str | None) -> list[str]:
    """One model's section: header, pixel metrics, LiTS metrics, review score, per-case rows
    and, given its path ``figure``, the figure."""
    return [
        *_model_header(evaluation),
        *_pixel_metrics(evaluation),
        *_lits_metrics(evaluation),
        *review_markdown(evaluation.review),
        "### Per case",
        "",
        *_per_case_table(evaluation),
        *_figure_lines(evaluation, figure),
        "",
    ]


def _model_header(evaluation: ModelEvaluation) -> list[str]:
    """The section's title and the model's checkpoint, network, training data and timing."""
    height, width = evaluation.input_size
    return [
        f"## {evaluation.name}",
        "",
        f"- Checkpoint: `{evaluation.checkpoint}`",
        f"- Architecture: {evaluation.architecture}, {_parameters(evaluation.parameters)} "
        f"parameters, input {height}×{width}, {evaluation.num_slices} slice(s) per input",
        f"- Trained on: {'; '.join(evaluation.training_data) or 'not recorded'}",
        f"- Device: {evaluation.device}; {_fmt(evaluation.seconds_per_case, 2)} s per case "
        f"(segmentation and clean-up), {_fmt(evaluation.total_seconds, 1)} s in all",
        "",
    ]


def _pixel_metrics(evaluation: ModelEvaluation) -> list[str]:
    """The papers' table per class and its macro mean, with the cross entropy."""
    table = evaluation.table
    height, width = evaluation.input_size
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
    return [
        "### Pixel metrics (the papers' table)",
        "",
        "Voxels of all cases at the CT's resolution; liver = label 1 (parenchyma).",
        "",
        *_table(["Class"] + [METRIC_TITLES[m] for m in METRIC_NAMES] + ["Cross entropy"], rows),
        "",
        f"Pixel accuracy (all classes): {_fmt(table['pixel_accuracy'], 4)}. "
        f"Cross entropy: {_fmt(evaluation.cross_entropy, 4)} (mean over all pixels at the "
        f"network's input size {height}×{width}, targets resized by nearest neighbour; per "
        "class: mean over the pixels of that true class, row 'mean': over all pixels).",
        "",
    ]


def _lits_metrics(evaluation: ModelEvaluation) -> list[str]:
    """Dice per case and global, HD95 and lesion detection, as LiTS scores them."""
    counts = evaluation.lesion_counts
    true_positives = counts["predicted"] - counts["false_positive"]
    rows = [
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
    ]
    return [
        "### LiTS metrics",
        "",
        "Liver = organ (label >= 1), tumour = label 2.",
        "",
        *_table(["Metric", "Liver", "Tumour"], rows),
        "",
        f"Lesion detection: recall {_fmt(evaluation.lesion_recall)} ({counts['detected']} of "
        f"{counts['true']} true lesions detected), precision {_fmt(evaluation.lesion_precision)} "
        f"({true_positives} of {counts['predicted']} predicted lesions true, "
        f"{counts['false_positive']} false positives).",
        "",
    ]


def _per_case_table(evaluation: ModelEvaluation) -> list[str]:
    """One row per case: Dice, HD95, lesion counts, cross entropy and seconds."""
    header = [
        "Case",
        "Liver Dice",
        "Tumour Dice",
        "Liver HD95 (mm)",
        "Tumour HD95 (mm)",
        "Lesions true / predicted / detected / FP",
        "CE",
        "Seconds",
    ]
    rows = [
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
    ]
    return _table(header, rows)


def _figure_lines(evaluation: ModelEvaluation, figure: str | None) -> list[str]:
    """The figure and its caption; nothing without a figure."""
    if figure is None or evaluation.figure is None:
        return []
    shown = ", ".join(str(i) for i in evaluation.figure.slices)
    return [
        "",
        f"![{evaluation.name}]({figure})",
        "",
        f"Figure: {evaluation.figure.case_id}, slices {shown}; Grad-CAM normalised once over "
        "the figure's slices.",
    ]


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
