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
  (each with its 2.5D neighbours), and is normalised once over the figure's slices.

Every input is built with the case's slice spacing (``CanonicalCase.spacing[0]``), which
models with a fixed slice step (``SliceInputSpec.slice_step_mm``) need.
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
from ..explain.methods import normalize_volume
from ..explain.review_calibration import case_rows as review_case_rows
from ..explain.review_calibration import score_summary
from ..explain.review_score import load_score_model
from ..models.catalog import read_catalog, resolve_model
from ..models.checkpoints import CheckpointMetadata, load_checkpoint
from ..models.networks import count_parameters
from ..segment.inference import SliceInferenceEngine, choose_device
from ..segment.map_grid import upsample_slice
from ..segment.postprocessing import clean_labels, drop_small_tumors
from ..segment.preprocessing import SliceInputSpec
from ..training.cases import CanonicalCase, Case, load_canonical_case
from .metrics import confusion_matrix, metrics_from_confusion, per_case_dice
from .surface_metrics import detection_rates, hausdorff95, lesion_detection

EvaluationProgress = Callable[[dict], None]


@dataclass
class CaseEvaluation:
    """One model on one case. Liver is the organ (label >= 1) as LiTS scores it."""

    case_id: str
    liver_dice: float
    tumor_dice: float
    liver_hd95_mm: float
    tumor_hd95_mm: float
    true_lesions: int
    predicted_lesions: int
    detected_lesions: int
    false_positive_lesions: int
    cross_entropy: float
    seconds: float


@dataclass
class FigureData:
    """Canonical slices (slice, row, column) of one case for the figure, all (n, H, W)."""

    case_id: str
    slices: list[int]
    ct: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    heatmaps: dict[str, np.ndarray]  # "liver", "tumor": Grad-CAM in [0, 1]
    spacing: tuple[float, float, float]


@dataclass
class ModelEvaluation:
    """Everything measured for one model; summary values are derived from the stored counts."""

    name: str
    checkpoint: Path
    architecture: str
    input_size: tuple[int, int]
    num_slices: int
    training_data: list[str]
    parameters: int | None
    confusion: np.ndarray  # (3, 3) int64, truth on rows, prediction on columns
    cross_entropy: float  # mean over all pixels at network resolution
    cross_entropy_per_class: dict[str, float] = field(
        default_factory=dict
    )  # mean over true-class pixels
    per_case: list[CaseEvaluation] = field(default_factory=list)
    postprocessed: bool = True
    device: str = "cpu"
    total_seconds: float = 0.0  # everything this model cost, metrics and figure included
    figure: FigureData | None = None
    review: dict[str, Any] = field(default_factory=dict)
    """The review score on these cases (:func:`.review_calibration.score_summary`): AUC for
    slices with liver Dice < 0.8, precision and flagged share at the threshold; empty when
    not measured."""

    @property
    def cases(self) -> list[str]:
        return [row.case_id for row in self.per_case]

    @property
    def table(self) -> dict[str, object]:
        """The papers' table: ``metrics_from_confusion`` of the summed confusion matrix."""
        return metrics_from_confusion(self.confusion, CLASS_NAMES)

    @property
    def global_dice_liver(self) -> float:
        """LiTS "Dice global" of the liver organ (label >= 1) over all cases."""
        cm = np.asarray(self.confusion, dtype=np.float64)
        return _global_dice(cm[LIVER:, LIVER:].sum(), cm[:, LIVER:].sum(), cm[LIVER:, :].sum())

    @property
    def global_dice_tumor(self) -> float:
        """LiTS "Dice global" of tumour (label 2) over all cases."""
        cm = np.asarray(self.confusion, dtype=np.float64)
        return _global_dice(cm[TUMOR, TUMOR], cm[:, TUMOR].sum(), cm[TUMOR, :].sum())

    def _values(self, name: str) -> np.ndarray:
        return np.array([getattr(row, name) for row in self.per_case], dtype=np.float64)

    @property
    def mean_dice_liver(self) -> float:
        return _mean(self._values("liver_dice"))

    @property
    def mean_dice_tumor(self) -> float:
        return _mean(self._values("tumor_dice"))

    @property
    def sd_dice_liver(self) -> float:
        return _sd(self._values("liver_dice"))

    @property
    def sd_dice_tumor(self) -> float:
        return _sd(self._values("tumor_dice"))

    @property
    def mean_hd95_liver(self) -> float:
        """Mean over cases where HD95 is defined (NaN-ignoring); NaN if none is."""
        return _mean(self._values("liver_hd95_mm"))

    @property
    def mean_hd95_tumor(self) -> float:
        return _mean(self._values("tumor_hd95_mm"))

    @property
    def lesion_counts(self) -> dict[str, int]:
        """True, predicted, detected and false-positive lesions summed over cases."""
        return {
            key: int(sum(getattr(row, f"{key}_lesions") for row in self.per_case))
            for key in ("true", "predicted", "detected", "false_positive")
        }

    @property
    def lesion_recall(self) -> float:
        return self._lesion_rates()[0]

    @property
    def lesion_precision(self) -> float:
        return self._lesion_rates()[1]

    def _lesion_rates(self) -> tuple[float, float]:
        c = self.lesion_counts
        true_positives = c["predicted"] - c["false_positive"]
        return detection_rates(c["true"], c["predicted"], c["detected"], true_positives)

    @property
    def seconds_per_case(self) -> float:
        return _mean(self._values("seconds"))


def _global_dice(tp: float, predicted: float, true: float) -> float:
    total = predicted + true
    return 1.0 if total == 0 else float(2.0 * tp / total)


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation (n - 1) of the defined values; NaN for fewer than two."""
    values = values[~np.isnan(values)]
    return float(values.std(ddof=1)) if values.size > 1 else float("nan")


# --- figure slices ----------------------------------------------------------------------------


def choose_figure_slices(labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` slices for the figure, ascending.

    The slice with the largest tumour area, then slices spread evenly over the slices that hold
    tumour (over the liver's slices when there is no tumour, over all slices when there is
    neither); slices with liver fill up when too few hold tumour.
    """
    if count <= 0:
        return []
    flat = labels.reshape(labels.shape[0], -1)
    tumor_area = (flat == TUMOR).sum(axis=1)
    liver_area = (flat >= LIVER).sum(axis=1)
    if tumor_area.any():
        pools = [np.flatnonzero(tumor_area), np.flatnonzero(liver_area)]
        chosen = [int(tumor_area.argmax())]
    elif liver_area.any():
        pools, chosen = [np.flatnonzero(liver_area)], [int(liver_area.argmax())]
    else:
        pools, chosen = [np.arange(labels.shape[0])], []
    pools.append(np.arange(labels.shape[0]))
    for pool in pools:
        for fraction in np.linspace(0, 1, count + 2)[1:-1]:
            index = int(pool[int(round(fraction * (pool.size - 1)))])
            if len(chosen) < count and index not in chosen:
                chosen.append(index)
        for index in pool:  # a small pool: take all of it
            if len(chosen) < count and int(index) not in chosen:
                chosen.append(int(index))
    return sorted(chosen)


def _figure_score(canonical: CanonicalCase) -> tuple[float, float]:
    """Tumour then liver volume (mL) of a case's truth: the figure shows the largest."""
    voxel_ml = math.prod(canonical.spacing) / 1000.0
    labels = canonical.labels
    tumor = int(np.count_nonzero(labels == TUMOR))
    return tumor * voxel_ml, int(np.count_nonzero(labels >= LIVER)) * voxel_ml


def _gradcam_slices(
    model: torch.nn.Module,
    spec: SliceInputSpec,
    device: torch.device,
    volume: np.ndarray,
    slices: list[int],
    slice_spacing_mm: float | None = None,
) -> dict[str, np.ndarray]:
    """Grad-CAM of liver and tumour on ``slices`` only, normalised once over them.

    Each slice is stacked with its neighbours as the network sees it in the whole volume, so
    2.5D models get the same input; the engine runs on these small blocks. With a slice step
    the block's slices lie one step apart, so the block's spacing is the step.
    """
    k = spec.num_slices
    blocks = spec.stacks(volume, slices, slice_spacing_mm).reshape(-1, *volume.shape[1:])
    engine = SliceInferenceEngine(model, spec, device)
    outputs = engine.run(
        blocks,
        explain_classes=(LIVER, TUMOR),
        methods=("gradcam",),
        slice_spacing_mm=spec.slice_step_mm,
    )
    centres = [j * k + k // 2 for j in range(len(slices))]
    slice_shape = volume.shape[1:]
    return {
        CLASS_NAMES[c]: normalize_volume(
            np.stack(
                [upsample_slice(outputs.heatmaps["gradcam", c][i], slice_shape) for i in centres]
            ),
            "volume-max",
        )
        for c in (LIVER, TUMOR)
    }


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
    runs: list[_ModelRun] = []
    for model_ref, name in zip(models, model_names(models), strict=True):
        mark = time.perf_counter()
        path = resolve_model(model_ref)
        model, metadata = load_checkpoint(path)
        engine = SliceInferenceEngine(
            model,
            metadata.input_spec(),
            torch_device,
            tumor_bias=metadata.tumor_bias,
            min_tumor_ml=metadata.min_tumor_ml,
        )
        runs.append(
            _ModelRun(
                name,
                path,
                engine.model,
                metadata,
                _training_data(model_ref, metadata),
                engine,
                parameters=count_parameters(model),
            )
        )
        runs[-1].seconds += time.perf_counter() - mark

    score_model = load_score_model() if review_score else None
    best_score: tuple[float, float] | None = None
    for index, case in enumerate(cases):
        _check_cancel(cancel)
        canonical = load_canonical_case(case)
        report({"event": "load", "case": case.case_id, "index": index, "total": len(cases)})
        score = _figure_score(canonical)
        new_figure = figure_slices > 0 and (best_score is None or score > best_score)
        slices = choose_figure_slices(canonical.labels, figure_slices) if new_figure else []
        if new_figure:
            best_score = score
        for position, run in enumerate(runs):
            _check_cancel(cancel)
            mark = time.perf_counter()
            labels = _evaluate_case(run, canonical, torch_device, postprocess, cancel)
            if review_score and score_model is not None:
                rows, _ = review_case_rows(run.engine, canonical, cancel)
                run.review_rows += [{"case": case.case_id, **row} for row in rows]
            if on_labels is not None:
                on_labels(run.name, canonical, labels)
            if slices:
                run.figure = FigureData(
                    case_id=case.case_id,
                    slices=slices,
                    ct=np.ascontiguousarray(canonical.image[slices]),
                    truth=np.ascontiguousarray(canonical.labels[slices]),
                    prediction=np.ascontiguousarray(labels[slices]),
                    heatmaps=_gradcam_slices(
                        run.model,
                        run.engine.spec,
                        torch_device,
                        canonical.image,
                        slices,
                        canonical.spacing[0],
                    ),
                    spacing=canonical.spacing,
                )
            run.seconds += time.perf_counter() - mark
            report(
                {
                    "event": "case",
                    "model": run.name,
                    "case": case.case_id,
                    "index": index,
                    "total": len(cases),
                    "fraction": (index * len(runs) + position + 1) / (len(cases) * len(runs)),
                    "seconds": run.rows[-1].seconds,
                }
            )
        del canonical

    return [
        ModelEvaluation(
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
            postprocessed=postprocess,
            device=str(torch_device),
            total_seconds=run.seconds,
            figure=run.figure,
            review=score_summary(run.review_rows, score_model) if score_model else {},
        )
        for run in runs
    ]
