"""What an evaluation measured: per model and case, per model, and the figure's data.

:class:`ModelEvaluation` stores counts (the summed confusion matrix, lesion counts per case)
and derives every summary from them: the papers' table, LiTS "Dice global" and the per-case
means and standard deviations (NaN-ignoring). :func:`.evaluate.evaluate_models` fills them,
:mod:`.report` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import CLASS_NAMES, LIVER, TUMOR
from .metrics import metrics_from_confusion
from .surface_metrics import detection_rates


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
