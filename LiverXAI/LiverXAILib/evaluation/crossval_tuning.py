"""Tumour post-processing chosen by leave-one-patient-out: a tumour bias and a minimum size.

Two settings decide what the network's tumour probabilities become in the report:

- ``tumor_bias``: a shift of the tumour's log-odds before the arg-max (0: the plain arg-max; 1:
  a pixel is tumour where ``e`` times its tumour probability beats the other classes). It is
  the probability threshold, expressed so that the exact label upsampling stays as it is.
- ``min_tumor_ml``: tumour components smaller than this become liver
  (:func:`.postprocessing.drop_small_tumors`), after the 3D clean-up.

After a ``crossval`` run, every fold's model predicts its held-out patient once; the labels of
each setting of a grid are made from those probabilities and scored like the cross-validation
(:func:`score_case`). The criterion is the pooled lesion F1 counted per true lesion,
``2·found / (2·found + missed + false lesions)`` (false lesions on the tumour-free liver count):
a found lesion split into pieces counts once, so a setting cannot gain by fragmenting it. Ties
are broken by the mean tumour Dice of the cases with tumour, then by the milder setting. The
minimum size stays at or below 0.5 mL, the volume of a 10 mm sphere, so that no setting can
hide a lesion of 10 mm or more (the size the lesion-recall target counts), however little the
current models find. Two answers are written to ``RUN/postprocessing.md`` and ``.json``:

- **nested**: for each patient, the setting chosen on the other patients' held-out predictions,
  applied to that patient: the honest estimate of what tuning buys on a new patient;
- **chosen**: the setting chosen on every patient, the one a model trained on all of them ships.

The chosen setting goes into a model's metadata with :func:`apply_setting` (``--apply``), where
inference (:class:`.inference.SliceInferenceEngine`) and the clean-up apply it.

Usage: ``python -m LiverXAILib crossval-tune --run RUN [--device D] [--apply MODEL --to OUT]``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..constants import TUMOR
from ..errors import InputError
from ..io.atomic import atomic_path
from ..models.checkpoints import load_checkpoint, save_checkpoint
from ..segment.inference import biased_probabilities, choose_device
from ..segment.label_upsampling import labels_from_probabilities
from ..segment.postprocessing import clean_labels, drop_small_tumors
from ..training.cases import CanonicalCase, load_canonical_case
from . import crossval_report as report
from .metrics import per_case_dice
from .surface_metrics import lesion_detection

Log = Callable[[dict], None]
TUMOR_BIASES = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
#: Up to 0.5 mL, a 10 mm sphere: no minimum may hide a lesion of 10 mm or more.
MIN_TUMOR_ML = (0.0, 0.05, 0.1, 0.25, 0.5)
BATCH = 16


@dataclass(frozen=True)
class TumorSetting:
    """The tumour post-processing of a model (see the module docstring)."""

    tumor_bias: float = 0.0
    min_tumor_ml: float = 0.0


def heldout_probabilities(checkpoint: Path, canonical: CanonicalCase, device: str) -> torch.Tensor:
    """Softmax (slices, classes, h, w) on the network's grid (float16, CPU) of one case."""
    model, metadata = load_checkpoint(checkpoint)
    torch_device = choose_device(device)
    model = model.to(torch_device).eval()
    spec = metadata.input_spec()
    depth = canonical.image.shape[0]
    parts = []
    with torch.inference_mode():
        for start in range(0, depth, BATCH):
            indices = list(range(start, min(start + BATCH, depth)))
            inputs = spec.batch(canonical.image, indices, slice_spacing_mm=canonical.spacing[0])
            logits = model(inputs.to(torch_device))
            parts.append(torch.softmax(logits.float(), dim=1).to("cpu", torch.float16))
    return torch.cat(parts)


def biased_labels(
    probabilities: torch.Tensor, tumor_bias: float, size: tuple[int, int]
) -> np.ndarray:
    """Full-size labels from network-grid probabilities with the tumour's odds times e**bias."""
    labels = np.zeros((probabilities.shape[0], *size), dtype=np.uint8)
    factor = math.exp(tumor_bias)
    for start in range(0, probabilities.shape[0], BATCH):
        block = biased_probabilities(probabilities[start : start + BATCH].float(), factor)
        labels[start : start + BATCH] = labels_from_probabilities(block, size).numpy()
    return labels


def score_case(labels: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
    """Tumour Dice (LiTS per case), lesion counts (all and >= 10 mm) and false tumour mL."""
    lesions = lesion_detection(labels, truth, spacing, TUMOR)
    large = report.lesions_by_size(labels, truth, spacing)
    return {
        "tumor_dice": per_case_dice(labels, truth, TUMOR),
        "true_lesions": int(lesions["true_lesions"]),
        "predicted_lesions": int(lesions["predicted_lesions"]),
        "detected": int(lesions["detected"]),
        "true_positives": int(lesions["true_positives"]),
        "false_positives": int(lesions["false_positives"]),
        "true_large": large["true_large_lesions"],
        "detected_large": large["detected_large_lesions"],
        "false_tumor_ml": large["false_tumor_ml"],
        "has_tumor": bool((truth == TUMOR).any()),
    }


def grid_rows(
    probabilities: torch.Tensor, canonical: CanonicalCase, postprocess: bool
) -> list[dict[str, Any]]:
    """One scored row per setting of the grid for one held-out case."""
    rows = []
    size = tuple(canonical.image.shape[1:])
    for bias in TUMOR_BIASES:
        labels = biased_labels(probabilities, bias, size)
        if postprocess:
            labels = clean_labels(labels, canonical.spacing)
        for min_ml in MIN_TUMOR_ML:
            kept = drop_small_tumors(labels, canonical.spacing, min_ml)
            measures = score_case(kept, canonical.labels, canonical.spacing)
            rows.append({"tumor_bias": bias, "min_tumor_ml": min_ml, **measures})
    return rows


def pooled(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Pooled lesion recall, precision and F1 and the mean tumour Dice of cases with tumour.

    ``lesion_precision`` is the share of predicted lesions that touch a true lesion, as
    ``crossval`` reports it; ``lesion_f1`` counts true lesions (see the module docstring).
    """
    true = sum(r["true_lesions"] for r in rows)
    predicted = sum(r["predicted_lesions"] for r in rows)
    found = sum(r["detected"] for r in rows)
    false = sum(r["false_positives"] for r in rows)
    recall = found / true if true else math.nan
    precision = sum(r["true_positives"] for r in rows) / predicted if predicted else math.nan
    f1 = 2 * found / (found + true + false) if found else 0.0
    dices = [r["tumor_dice"] for r in rows if r["has_tumor"]]
    large = sum(r["true_large"] for r in rows)
    return {
        "lesion_f1": f1,
        "lesion_recall": recall,
        "lesion_precision": precision,
        "recall_large": sum(r["detected_large"] for r in rows) / large if large else math.nan,
        "tumor_dice_mean": float(np.mean(dices)) if dices else math.nan,
        "false_lesions_per_case": sum(r["false_positives"] for r in rows) / max(len(rows), 1),
        "false_tumor_ml_tumor_free": sum(r["false_tumor_ml"] for r in rows if not r["has_tumor"]),
    }


def _key(setting: TumorSetting, scores: dict[str, float]) -> tuple:
    dice = scores["tumor_dice_mean"]
    return (
        round(scores["lesion_f1"], 9),
        round(dice, 9) if math.isfinite(dice) else -1.0,
        -abs(setting.tumor_bias),
        -setting.min_tumor_ml,
    )


def choose(rows: Sequence[dict[str, Any]], patients: Sequence[str]) -> TumorSetting:
    """The grid setting with the best pooled score over ``patients``' rows."""
    best, best_key = TumorSetting(), None
    for bias in TUMOR_BIASES:
        for min_ml in MIN_TUMOR_ML:
            setting = TumorSetting(bias, min_ml)
            scores = pooled(_at(rows, setting, patients))
            key = _key(setting, scores)
            if best_key is None or key > best_key:
                best, best_key = setting, key
    return best


def _at(
    rows: Sequence[dict[str, Any]], setting: TumorSetting, patients: Sequence[str]
) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if r["patient"] in patients
        and r["tumor_bias"] == setting.tumor_bias
        and r["min_tumor_ml"] == setting.min_tumor_ml
    ]


def tune(run_dir: str | Path, device: str = "auto", log: Log | None = None) -> dict[str, Any]:
    """Score the grid on every finished fold of ``run_dir`` and write the answers (docstring)."""
    log = log or (lambda _record: None)
    run_dir = Path(run_dir)
    rows: list[dict[str, Any]] = []
    for patient, checkpoint, recipe, cases in report.finished_folds(run_dir, "tune", log):
        for case in cases:
            case_id = case.case_id
            canonical = load_canonical_case(case)
            probabilities = heldout_probabilities(checkpoint, canonical, device)
            for row in grid_rows(probabilities, canonical, bool(recipe["postprocess"])):
                rows.append({"patient": patient, "case": case_id, **row})
            log({"event": "tune", "fold": patient, "case": case_id, "status": "scored"})
    patients = list(dict.fromkeys(r["patient"] for r in rows))
    if not patients:
        raise InputError(f"{run_dir}: no finished fold to tune on.")
    result = _answers(rows, patients)
    _write(run_dir, rows, result)
    return result


def _answers(rows: list[dict[str, Any]], patients: list[str]) -> dict[str, Any]:
    nested_rows, nested = [], {}
    for patient in patients:
        setting = choose(rows, [p for p in patients if p != patient])
        nested[patient] = setting.__dict__
        nested_rows += _at(rows, setting, [patient])
    chosen = choose(rows, patients)
    return {
        "criterion": (
            "pooled lesion F1 counted per true lesion (a lesion split in pieces counts once), "
            "then mean tumour Dice of the cases with tumour"
        ),
        "grid": {"tumor_bias": list(TUMOR_BIASES), "min_tumor_ml": list(MIN_TUMOR_ML)},
        "patients": patients,
        "untuned": pooled(_at(rows, TumorSetting(), patients)),
        "nested": {"settings": nested, "scores": pooled(nested_rows)},
        "chosen": {**chosen.__dict__, "scores": pooled(_at(rows, chosen, patients))},
    }


def _write(run_dir: Path, rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    report.write_json(run_dir / "postprocessing.json", result)
    with (
        atomic_path(run_dir / "postprocessing_grid.csv", suffix=".csv") as temporary,
        open(temporary, "w", newline="", encoding="utf-8") as stream,
    ):
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(run_dir / "postprocessing.md", suffix=".md") as temporary:
        Path(temporary).write_text(markdown(result), encoding="utf-8")


def _cell(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """The tuning's answers as a Markdown page."""
    columns = list(result["untuned"])
    lines = [
        "# Tumour post-processing chosen by leave-one-patient-out",
        "",
        f"- Criterion: {result['criterion']}.",
        f"- Grid: tumour bias (log-odds) {result['grid']['tumor_bias']}, minimum tumour "
        f"{result['grid']['min_tumor_ml']} mL.",
        f"- Patients: {', '.join(result['patients'])}.",
        "",
        "| setting | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    chosen = result["chosen"]
    for name, scores in (
        ("none (bias 0, no minimum)", result["untuned"]),
        ("nested: chosen without the patient scored", result["nested"]["scores"]),
        (
            f"chosen on all: bias {chosen['tumor_bias']}, minimum {chosen['min_tumor_ml']} mL",
            chosen["scores"],
        ),
    ):
        lines.append(f"| {name} | " + " | ".join(_cell(scores[c]) for c in columns) + " |")
    lines += ["", "Nested choices per held-out patient:", ""]
    for patient, setting in result["nested"]["settings"].items():
        lines.append(
            f"- {patient}: bias {setting['tumor_bias']}, minimum {setting['min_tumor_ml']} mL"
        )
    return "\n".join(lines) + "\n"


def apply_setting(
    checkpoint: str | Path, out: str | Path, setting: TumorSetting, source: str
) -> None:
    """Write ``checkpoint`` to ``out`` (atomically) with ``setting`` in its metadata."""
    model, metadata = load_checkpoint(checkpoint)
    metadata.tumor_bias = float(setting.tumor_bias)
    metadata.min_tumor_ml = float(setting.min_tumor_ml)
    note = f"Tumour post-processing (bias {setting.tumor_bias}, minimum {setting.min_tumor_ml} mL)"
    metadata.notes = " ".join(filter(None, [metadata.notes, f"{note} chosen by {source}."]))
    save_checkpoint(out, model, metadata)


def chosen_setting(run_dir: str | Path) -> TumorSetting:
    """The setting chosen on all patients of a tuned run (``RUN/postprocessing.json``)."""
    result = report.read_json(Path(run_dir) / "postprocessing.json")
    if result is None:
        raise InputError(f"{run_dir} is not tuned yet: run crossval-tune --run {run_dir} first.")
    chosen = result["chosen"]
    return TumorSetting(float(chosen["tumor_bias"]), float(chosen["min_tumor_ml"]))
