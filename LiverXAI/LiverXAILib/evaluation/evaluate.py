"""Evaluate trained models on labelled CT cases: the papers' table, LiTS metrics, figure data.

Every case is read once (:func:`.data.load_canonical_case`) and every model is run on it, so
comparing models does not reread volumes. For each model and case:

- **labels** come from :class:`.inference.SliceInferenceEngine` (the product's path), then
  :func:`.postprocessing.clean_labels` when ``postprocess`` is set (the 3D clean-up of
  Segment & Explain). Labels are compared with the truth voxel by voxel at the CT's own
  resolution, in canonical orientation.
- **confusion matrix** summed over all cases → the papers' table (accuracy, precision,
  recall, IoU, Dice per class and macro mean; :func:`.metrics.metrics_from_confusion`, where
  "liver" is label 1, the parenchyma).
- **LiTS metrics**: per-case Dice of the liver organ (label >= 1) and of tumour (label 2),
  "Dice global" ``2·ΣTP / Σ(|P| + |T|)`` over all cases (derived from the confusion matrix),
  HD95 per case (:func:`.surface_metrics.hausdorff95`) and lesion detection summed over
  cases (:func:`.surface_metrics.lesion_detection`).
- **cross entropy**: the papers report their training loss, the pixel-wise cross entropy of
  the softmax on slices at the network's input size. It is therefore computed at network
  resolution: the same input batches as training (:meth:`.preprocessing.SliceInputSpec.batch`),
  targets resized by nearest neighbour, mean over every pixel of every slice of every case.
  It needs one more forward pass per slice besides the engine's.
- **seconds** per case: segmentation (engine) plus clean-up, what a user waits for; reading
  the case and computing metrics are not counted.
- **figure data**: a few slices of the case with the most tumour (else the most liver) with
  CT, truth, prediction and Grad-CAM for liver and tumour. Grad-CAM runs on those slices only
  (each with its 2.5D neighbours), and is normalised once over the figure's slices
  (``figure_slices.py``).

The results are the dataclasses of ``model_evaluation.py``. Every input is built with the
case's slice spacing (``CanonicalCase.spacing[0]``), which models with a fixed slice step
(``SliceInputSpec.slice_step_mm``) need.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import CLASS_NAMES, LIVER, TUMOR
from ..errors import Cancelled
from ..explain.review_calibration import case_rows as review_case_rows
from ..explain.review_calibration import score_summary
from ..explain.review_score import load_score_model
from ..models.catalog import read_catalog, resolve_model
from ..models.checkpoints import CheckpointMetadata, load_checkpoint
from ..models.networks import count_parameters
from ..segment.inference import SliceInferenceEngine, choose_device
from ..segment.postprocessing import clean_labels, drop_small_tumors
from ..segment.preprocessing import SliceInputSpec
from ..training.cases import CanonicalCase, Case, load_canonical_case
from .figure_slices import choose_figure_slices, figure_data, figure_score
from .metrics import confusion_matrix, per_case_dice
from .model_evaluation import CaseEvaluation, FigureData, ModelEvaluation
from .surface_metrics import hausdorff95, lesion_detection

EvaluationProgress = Callable[[dict], None]


# --- cross entropy at network resolution ----------------------------------------------------


def _cross_entropy_sum(
    model: torch.nn.Module,
    spec: SliceInputSpec,
    device: torch.device,
    canonical: CanonicalCase,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Per true class: sum of the pixel cross entropy at network resolution, and pixel count."""
    depth = canonical.image.shape[0]
    sums = np.zeros(len(CLASS_NAMES), dtype=np.float64)
    counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    with torch.inference_mode():
        for first in range(0, depth, batch_size):
            indices = list(range(first, min(first + batch_size, depth)))
            inputs = spec.batch(canonical.image, indices, canonical.spacing[0])
            logits = model(inputs.to(device)).float()
            targets = torch.from_numpy(canonical.labels[indices].astype(np.float32))
            targets = F.interpolate(targets[:, None], size=spec.input_size, mode="nearest-exact")[
                :, 0
            ]
            targets = targets.long().to(device)
            losses = F.cross_entropy(logits, targets, reduction="none").double().flatten()
            classes = targets.flatten()
            sums += torch.bincount(classes, losses, minlength=len(CLASS_NAMES)).cpu().numpy()
            counts += torch.bincount(classes, minlength=len(CLASS_NAMES)).cpu().numpy()
    return sums, counts


# --- the evaluation -------------------------------------------------------------------------


@dataclass
class _ModelRun:
    """A loaded model and what has been accumulated for it so far."""

    name: str
    path: Path
    model: torch.nn.Module  # the engine's network (BatchNorm folded, on the device)
    metadata: CheckpointMetadata
    training_data: list[str]
    engine: SliceInferenceEngine
    parameters: int = 0  # of the network as trained (folding drops the BatchNorm parameters)
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), dtype=np.int64))
    ce_sums: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.float64))
    ce_counts: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))
    rows: list[CaseEvaluation] = field(default_factory=list)
    seconds: float = 0.0
    figure: FigureData | None = None
    review_rows: list[dict[str, Any]] = field(default_factory=list)


def model_names(models: Sequence[str | Path]) -> list[str]:
    """Display names: catalog names as given, files by stem (with their folder if ambiguous)."""
    catalog = {entry["name"] for entry in read_catalog()}
    names = [str(m) if str(m) in catalog else Path(m).stem for m in models]
    names = [
        f"{Path(m).parent.name}/{name}" if str(m) not in catalog and names.count(name) > 1 else name
        for m, name in zip(models, names, strict=True)
    ]
    unique: list[str] = []
    for name in names:
        candidate, number = name, 2
        while candidate in unique:
            candidate, number = f"{name}-{number}", number + 1
        unique.append(candidate)
    return unique


def safe_file_name(name: str) -> str:
    """A model name made safe as a file name (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _training_data(model: str | Path, metadata: CheckpointMetadata) -> list[str]:
    """The catalog's description of the training data for catalog models, else the metadata's."""
    for entry in read_catalog():
        if entry["name"] == str(model) and entry.get("training_data"):
            return [str(item) for item in entry["training_data"]]
    return [str(item) for item in metadata.training_data]


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Evaluation was cancelled.")


def _evaluate_case(
    run: _ModelRun,
    canonical: CanonicalCase,
    device: torch.device,
    postprocess: bool,
    cancel: threading.Event | None,
) -> np.ndarray:
    """Segment one case with one model, add its counts to ``run``; returns the labels."""
    start = time.perf_counter()
    labels = run.engine.run(
        canonical.image, cancel=cancel, slice_spacing_mm=canonical.spacing[0]
    ).labels
    if postprocess:
        labels = clean_labels(labels, canonical.spacing)
        labels = drop_small_tumors(labels, canonical.spacing, run.engine.min_tumor_ml)
    seconds = time.perf_counter() - start
    truth, spacing = canonical.labels, canonical.spacing
    run.confusion += confusion_matrix(labels, truth, len(CLASS_NAMES))
    ce_sums, ce_counts = _cross_entropy_sum(
        run.model, run.engine.spec, device, canonical, run.engine.batch_size
    )
    run.ce_sums += ce_sums
    run.ce_counts += ce_counts
    lesions = lesion_detection(labels, truth, spacing, TUMOR)
    run.rows.append(
        CaseEvaluation(
            case_id=canonical.case.case_id,
            liver_dice=per_case_dice(labels, truth, LIVER),
            tumor_dice=per_case_dice(labels, truth, TUMOR),
            liver_hd95_mm=hausdorff95(labels >= LIVER, truth >= LIVER, spacing),
            tumor_hd95_mm=hausdorff95(labels == TUMOR, truth == TUMOR, spacing),
            true_lesions=int(lesions["true_lesions"]),
            predicted_lesions=int(lesions["predicted_lesions"]),
            detected_lesions=int(lesions["detected"]),
            false_positive_lesions=int(lesions["false_positives"]),
            cross_entropy=float(ce_sums.sum() / max(ce_counts.sum(), 1)),
            seconds=seconds,
        )
    )
    return labels


def evaluate_models(
    models: Sequence[str | Path],
    cases: Sequence[Case],
    device: str = "auto",
    postprocess: bool = True,
    figure_slices: int = 4,
    progress: EvaluationProgress | None = None,
    cancel: threading.Event | None = None,
    on_labels: Callable[[str, CanonicalCase, np.ndarray], None] | None = None,
    review_score: bool = True,
) -> list[ModelEvaluation]:
    """Evaluate each model (catalog name or checkpoint path) on every case.

    ``progress`` receives dictionaries: ``{"event": "load", "case", "index", "total"}`` when a
    case is read; ``{"event": "case", "model", "case", "index", "total", "fraction",
    "seconds"}`` after a model has been scored on it (``fraction``: share of all model-case
    pairs done). Raises ``Cancelled`` when ``cancel`` is set (checked between cases and
    between slice batches), ``CheckpointError`` for a bad model and ``InputError`` for a bad
    case. ``on_labels(model name, case, labels)``, if given, receives each model's scored
    labels of each case (canonical orientation, post-processed if ``postprocess``).
    With ``review_score`` (and a calibrated score installed), each case also runs through
    the product pipeline (Grad-CAM, uncertainty) to score its liver slices for review.
    """
    if not models:
        raise ValueError("no model to evaluate")
    if not cases:
        raise ValueError("no case to evaluate on")
    report = progress or (lambda _event: None)
    torch_device = choose_device(device)
    runs = [
        _load_model(model_ref, name, torch_device)
        for model_ref, name in zip(models, model_names(models), strict=True)
    ]
    settings = _CaseSettings(
        torch_device, postprocess, cancel, on_labels, load_score_model() if review_score else None
    )
    best_score: tuple[float, float] | None = None
    for index, case in enumerate(cases):
        _check_cancel(cancel)
        canonical = load_canonical_case(case)
        report({"event": "load", "case": case.case_id, "index": index, "total": len(cases)})
        slices, best_score = _new_figure_slices(canonical, figure_slices, best_score)
        _run_models_on_case(runs, canonical, slices, settings, (index, len(cases)), report)
        del canonical
    return [_model_evaluation(run, settings) for run in runs]


@dataclass
class _CaseSettings:
    """What every model-case pair is evaluated with."""

    device: torch.device
    postprocess: bool
    cancel: threading.Event | None
    on_labels: Callable[[str, CanonicalCase, np.ndarray], None] | None
    score_model: Any  # the review score's model; None: not measured


def _run_models_on_case(
    runs: list[_ModelRun],
    canonical: CanonicalCase,
    slices: list[int],
    settings: _CaseSettings,
    position: tuple[int, int],
    report: EvaluationProgress,
) -> None:
    """Score every model on one case (``position``: its index and the number of cases),
    reporting a "case" event after each."""
    index, total = position
    for number, run in enumerate(runs):
        _check_cancel(settings.cancel)
        mark = time.perf_counter()
        _run_on_case(run, canonical, slices, settings)
        run.seconds += time.perf_counter() - mark
        report(
            {
                "event": "case",
                "model": run.name,
                "case": canonical.case.case_id,
                "index": index,
                "total": total,
                "fraction": (index * len(runs) + number + 1) / (total * len(runs)),
                "seconds": run.rows[-1].seconds,
            }
        )


def _load_model(model_ref: str | Path, name: str, device: torch.device) -> _ModelRun:
    """Load a catalog model or checkpoint and its inference engine; the time counts."""
    mark = time.perf_counter()
    path = resolve_model(model_ref)
    model, metadata = load_checkpoint(path)
    engine = SliceInferenceEngine(
        model,
        metadata.input_spec(),
        device,
        tumor_bias=metadata.tumor_bias,
        min_tumor_ml=metadata.min_tumor_ml,
    )
    run = _ModelRun(
        name,
        path,
        engine.model,
        metadata,
        _training_data(model_ref, metadata),
        engine,
        parameters=count_parameters(model),
    )
    run.seconds += time.perf_counter() - mark
    return run


def _new_figure_slices(
    canonical: CanonicalCase, count: int, best_score: tuple[float, float] | None
) -> tuple[list[int], tuple[float, float] | None]:
    """The figure's slices of this case if it beats the best so far (else none), and the
    best score after it."""
    score = figure_score(canonical)
    new_figure = count > 0 and (best_score is None or score > best_score)
    slices = choose_figure_slices(canonical.labels, count) if new_figure else []
    return slices, score if new_figure else best_score


def _run_on_case(
    run: _ModelRun, canonical: CanonicalCase, slices: list[int], settings: _CaseSettings
) -> None:
    """Score one model on one case: counts, review rows, ``on_labels`` and the figure."""
    case_id = canonical.case.case_id
    labels = _evaluate_case(run, canonical, settings.device, settings.postprocess, settings.cancel)
    if settings.score_model is not None:
        rows, _ = review_case_rows(run.engine, canonical, settings.cancel)
        run.review_rows += [{"case": case_id, **row} for row in rows]
    if settings.on_labels is not None:
        settings.on_labels(run.name, canonical, labels)
    if slices:
        run.figure = figure_data(
            run.model, run.engine.spec, settings.device, canonical, labels, slices
        )


def _model_evaluation(run: _ModelRun, settings: _CaseSettings) -> ModelEvaluation:
    """Everything accumulated for one model, as its :class:`ModelEvaluation`."""
    return ModelEvaluation(
        name=run.name,
        checkpoint=run.path,
        architecture=run.metadata.architecture,
        input_size=tuple(run.metadata.input_size),
        num_slices=run.metadata.num_slices,
        training_data=run.training_data,
        parameters=run.parameters,
        confusion=run.confusion,
        cross_entropy=float(run.ce_sums.sum() / max(run.ce_counts.sum(), 1)),
        cross_entropy_per_class={
            name: float(run.ce_sums[i] / run.ce_counts[i]) if run.ce_counts[i] else math.nan
            for i, name in enumerate(CLASS_NAMES)
        },
        per_case=run.rows,
        postprocessed=settings.postprocess,
        device=str(settings.device),
        total_seconds=run.seconds,
        figure=run.figure,
        review=score_summary(run.review_rows, settings.score_model) if settings.score_model else {},
    )
