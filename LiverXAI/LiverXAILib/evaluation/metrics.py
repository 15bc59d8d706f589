"""Segmentation metrics from a confusion matrix, plus the LiTS per-case Dice.

Conventions (chosen so that no metric is ever NaN and no division warning is raised):

- Confusion matrices have the truth on the rows and the prediction on the columns:
  ``cm[t, p]`` counts pixels of true class ``t`` predicted as ``p``.
- A class absent from both prediction and truth scores 1.0 on every measure: nothing was to
  be found and nothing was found. This is the LiTS convention for per-case Dice (an empty
  prediction on a case without tumour has Dice 1.0).
- Otherwise a ratio with a zero denominator is 0.0: precision when the class was never
  predicted but is present (it was missed), recall when it was predicted but is absent (every
  prediction is false). Dice and IoU are then 0.0 as well, so the conventions agree.
- In :func:`metrics_from_confusion` "liver" is label 1 (parenchyma) as in the confusion
  matrix, whereas :func:`per_case_dice` evaluates liver as LiTS does: the whole organ,
  tumour included (label >= 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..constants import CLASS_NAMES, LIVER

METRIC_NAMES: tuple[str, ...] = ("accuracy", "precision", "recall", "iou", "dice")


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int = 3) -> np.ndarray:
    """Count ``(true, predicted)`` label pairs into a ``(num_classes, num_classes)`` int64 matrix.

    ``pred`` and ``target`` are integer label arrays of the same shape, values in
    ``[0, num_classes)``. Counted in blocks, so a 512×512×1000 volume needs no int64 copy.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"Prediction shape {pred.shape} differs from target shape {target.shape}")
    pred = pred.reshape(-1)
    target = target.reshape(-1)
    for name, values in (("prediction", pred), ("target", target)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), "
                f"got [{values.min()}, {values.max()}]"
            )
    counts = np.zeros(num_classes * num_classes, dtype=np.int64)
    block = 1 << 22
    for first in range(0, pred.size, block):
        codes = target[first : first + block].astype(np.int64) * num_classes
        codes += pred[first : first + block]
        counts += np.bincount(codes, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def metrics_from_confusion(
    cm: np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, object]:
    """Per-class and macro-mean accuracy, precision, recall, IoU and Dice from a confusion matrix.

    Returns ``{"per_class": {name: {metric: value}}, "macro": {metric: value},
    "pixel_accuracy": value, "support": {name: true pixels}}`` with metrics named as in
    :data:`METRIC_NAMES`. Per-class
    accuracy is the one-vs-rest accuracy ``(TP + TN) / N``; ``pixel_accuracy`` is the share of
    correctly labelled pixels over all classes; "macro" is the unweighted mean over classes.
    See the module docstring for empty-class conventions.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"Confusion matrix must be square, got shape {cm.shape}")
    if len(class_names) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}-class matrix")
    total = cm.sum()
    if total <= 0:
        raise ValueError("Confusion matrix is empty: no pixels were counted")

    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp  # predicted as the class, truly another
    fn = cm.sum(axis=1) - tp  # truly the class, predicted as another
    tn = total - tp - fp - fn
    absent = (tp + fp + fn) == 0
    values = {
        "accuracy": (tp + tn) / total,
        "precision": _ratio(tp, tp + fp, absent),
        "recall": _ratio(tp, tp + fn, absent),
        "iou": _ratio(tp, tp + fp + fn, absent),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, absent),
    }
    per_class = {
        name: {metric: float(values[metric][i]) for metric in METRIC_NAMES}
        for i, name in enumerate(class_names)
    }
    macro = {metric: float(np.mean(values[metric])) for metric in METRIC_NAMES}
    support = {name: int(cm[i].sum()) for i, name in enumerate(class_names)}  # true pixels
    return {
        "per_class": per_class,
        "macro": macro,
        "pixel_accuracy": float(tp.sum() / total),
        "support": support,
    }


def dice(pred_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """Dice overlap ``2|A & B| / (|A| + |B|)`` of two boolean masks; 1.0 if both are empty."""
    pred_mask = np.asarray(pred_mask, dtype=bool)
    true_mask = np.asarray(true_mask, dtype=bool)
    if pred_mask.shape != true_mask.shape:
        raise ValueError(f"Mask shapes differ: {pred_mask.shape} and {true_mask.shape}")
    denominator = int(np.count_nonzero(pred_mask)) + int(np.count_nonzero(true_mask))
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred_mask & true_mask)) / denominator


def per_case_dice(pred: np.ndarray, target: np.ndarray, class_id: int) -> float:
    """Dice of one class over a whole case, as LiTS scores it.

    ``class_id`` 1 (liver) compares the organ, tumour included (label >= 1); any other class
    (2 = tumour) compares ``label == class_id``. Empty in both gives 1.0.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if class_id == LIVER:
        return dice(pred >= LIVER, target >= LIVER)
    return dice(pred == class_id, target == class_id)


def cross_entropy(probabilities: np.ndarray, target: np.ndarray, eps: float = 1e-7) -> float:
    """Mean over pixels of ``-log p(true class)``.

    ``probabilities`` has shape ``(C, ...)`` (softmax output, classes first) and ``target``
    the matching ``(...)`` integer labels; probabilities are clipped to ``[eps, 1]`` so a
    confident mistake costs ``-log(eps)`` rather than infinity.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    target = np.asarray(target)
    if probabilities.shape[1:] != target.shape:
        raise ValueError(
            f"Probabilities {probabilities.shape} do not match target {target.shape}: "
            "expected (C, *target.shape)"
        )
    if target.size == 0:
        raise ValueError("Cannot compute cross-entropy of an empty target")
    if target.min() < 0 or target.max() >= probabilities.shape[0]:
        raise ValueError(f"target labels must lie in [0, {probabilities.shape[0]})")
    true_class = np.take_along_axis(probabilities, target[np.newaxis].astype(np.intp), axis=0)
    return float(-np.mean(np.log(np.clip(true_class, eps, 1.0))))


def _ratio(numerator: np.ndarray, denominator: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """``numerator / denominator``; 1.0 where the class is absent, 0.0 on other zero divisions."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(absent, 1.0, np.where(denominator > 0, numerator / safe, 0.0))
