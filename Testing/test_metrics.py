"""Behaviour of the confusion-matrix metrics, the LiTS per-case Dice and the cross-entropy."""

import math

import numpy as np
import pytest
from LiverXAILib.evaluation.metrics import (
    METRIC_NAMES,
    confusion_matrix,
    cross_entropy,
    dice,
    metrics_from_confusion,
    per_case_dice,
)

TARGET = np.array([[0, 0, 1, 1], [0, 1, 1, 2], [0, 1, 2, 2]])
PRED = np.array([[0, 1, 1, 1], [0, 1, 2, 2], [0, 0, 2, 1]])
# Truth on rows, prediction on columns, counted by hand from the two arrays above.
EXPECTED_CM = np.array([[3, 1, 0], [1, 3, 1], [0, 1, 2]])


def test_confusion_matrix_by_hand() -> None:
    cm = confusion_matrix(PRED, TARGET)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, EXPECTED_CM)
    assert cm.sum() == TARGET.size


def test_confusion_matrix_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(PRED, TARGET[:2])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(PRED + 1, TARGET)


def test_metrics_by_hand() -> None:
    result = metrics_from_confusion(EXPECTED_CM)
    tumor = result["per_class"]["tumor"]
    # Tumour: TP 2, FP 1 (a liver pixel), FN 1 (predicted liver), TN 8 of 12 pixels.
    assert tumor["precision"] == pytest.approx(2 / 3)
    assert tumor["recall"] == pytest.approx(2 / 3)
    assert tumor["iou"] == pytest.approx(2 / 4)
    assert tumor["dice"] == pytest.approx(4 / 6)
    assert tumor["accuracy"] == pytest.approx(10 / 12)
    liver = result["per_class"]["liver"]
    # Liver (label 1): TP 3, FP 2, FN 2.
    assert liver["precision"] == pytest.approx(3 / 5)
    assert liver["dice"] == pytest.approx(6 / 10)
    assert result["pixel_accuracy"] == pytest.approx(8 / 12)
    background_iou = 3 / 5
    assert result["macro"]["iou"] == pytest.approx((background_iou + 3 / 7 + 2 / 4) / 3)
    assert set(result["per_class"]) == {"background", "liver", "tumor"}
    assert set(result["macro"]) == set(METRIC_NAMES)


def test_perfect_prediction_scores_one_everywhere() -> None:
    result = metrics_from_confusion(confusion_matrix(TARGET, TARGET))
    for scores in [*result["per_class"].values(), result["macro"]]:
        assert all(value == 1.0 for value in scores.values())
    assert result["pixel_accuracy"] == 1.0


def test_disjoint_prediction_scores_zero() -> None:
    target = np.array([0, 0, 1, 1])
    pred = np.array([1, 1, 0, 0])
    result = metrics_from_confusion(confusion_matrix(pred, target, num_classes=2), ("a", "b"))
    for name in ("a", "b"):
        scores = result["per_class"][name]
        assert scores["dice"] == scores["iou"] == scores["precision"] == scores["recall"] == 0
    assert result["pixel_accuracy"] == 0.0


def test_empty_class_conventions_give_no_nan() -> None:
    # No tumour in the truth and none predicted: every tumour score is 1.0.
    target = np.array([0, 1, 1, 0])
    result = metrics_from_confusion(confusion_matrix(target, target))
    assert all(value == 1.0 for value in result["per_class"]["tumor"].values())
    # Tumour missed entirely: precision and recall 0.0, not NaN.
    missed = metrics_from_confusion(confusion_matrix(np.array([0, 1, 1, 0]), [0, 1, 2, 0]))
    assert missed["per_class"]["tumor"]["precision"] == 0.0
    assert missed["per_class"]["tumor"]["recall"] == 0.0
    # Tumour predicted where there is none: recall 0.0.
    false = metrics_from_confusion(confusion_matrix(np.array([0, 2, 1, 0]), [0, 1, 1, 0]))
    assert false["per_class"]["tumor"]["recall"] == 0.0
    for scores in (missed, false):
        assert not any(math.isnan(v) for v in scores["macro"].values())


def test_metrics_refuse_bad_matrices() -> None:
    with pytest.raises(ValueError, match="square"):
        metrics_from_confusion(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="class names"):
        metrics_from_confusion(EXPECTED_CM, ("a", "b"))
    with pytest.raises(ValueError, match="empty"):
        metrics_from_confusion(np.zeros((3, 3)))


def test_dice_by_hand_and_conventions() -> None:
    a = np.array([1, 1, 1, 0, 0], dtype=bool)
    b = np.array([0, 1, 1, 1, 0], dtype=bool)
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros(5, bool), np.zeros(5, bool)) == 1.0  # LiTS: empty vs empty
    assert dice(np.zeros(5, bool), b) == 0.0


def test_per_case_dice_liver_is_the_whole_organ() -> None:
    target = np.array([0, 1, 1, 2, 2, 0])
    pred = np.array([0, 1, 2, 2, 1, 0])  # organ is right, tumour half right
    assert per_case_dice(pred, target, 1) == 1.0
    assert per_case_dice(pred, target, 2) == pytest.approx(2 * 1 / 4)
    no_tumour = np.array([0, 1, 1, 0])
    assert per_case_dice(no_tumour, no_tumour, 2) == 1.0


def test_cross_entropy() -> None:
    probabilities = np.array([[0.7, 0.2], [0.2, 0.5], [0.1, 0.3]])  # (C=3, N=2)
    target = np.array([0, 2])
    expected = -(math.log(0.7) + math.log(0.3)) / 2
    assert cross_entropy(probabilities, target) == pytest.approx(expected)
    one_hot = np.eye(3)[:, [0, 2]]
    assert cross_entropy(one_hot, target) == pytest.approx(0.0, abs=1e-6)
    # A certain mistake costs -log(eps), not infinity.
    assert cross_entropy(one_hot, np.array([1, 1]), eps=1e-7) == pytest.approx(-math.log(1e-7))
    with pytest.raises(ValueError, match="do not match"):
        cross_entropy(probabilities, np.array([0, 1, 2]))
