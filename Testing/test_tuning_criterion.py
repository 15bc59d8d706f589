"""The tumour post-processing criterion of ``crossval-tune``, on hand-made rows."""

from __future__ import annotations

import pytest
from LiverXAILib.evaluation.crossval_tuning import MIN_TUMOR_ML, pooled


def _row(found, true, pieces_on_found, false, has_tumor=True, dice=0.5, false_ml=0.0):
    return {
        "true_lesions": true,
        "detected": found,
        "true_positives": pieces_on_found,
        "false_positives": false,
        "predicted_lesions": pieces_on_found + false,
        "true_large": true,
        "detected_large": found,
        "tumor_dice": dice,
        "has_tumor": has_tumor,
        "false_tumor_ml": false_ml,
    }


def test_splitting_a_found_lesion_does_not_raise_the_lesion_f1():
    whole = pooled([_row(found=1, true=2, pieces_on_found=1, false=3)])
    split = pooled([_row(found=1, true=2, pieces_on_found=4, false=3)])
    assert (
        whole["lesion_f1"] == split["lesion_f1"] == pytest.approx(2 / (2 * 1 + 1 + 3))
    )  # 1 found, 1 missed, 3 false
    assert split["lesion_precision"] > whole["lesion_precision"]  # as crossval reports it


def test_fewer_false_lesions_raise_the_lesion_f1_and_nothing_found_scores_zero():
    many = pooled([_row(1, 4, 1, 6), _row(0, 0, 0, 5, has_tumor=False, false_ml=20.0)])
    few = pooled([_row(1, 4, 1, 1), _row(0, 0, 0, 1, has_tumor=False, false_ml=2.0)])
    assert few["lesion_f1"] > many["lesion_f1"]
    assert few["false_lesions_per_case"] == 1.0 and few["false_tumor_ml_tumor_free"] == 2.0
    assert pooled([_row(0, 3, 0, 0)])["lesion_f1"] == 0.0


def test_no_minimum_size_can_hide_a_lesion_of_10_mm():
    sphere_10mm_ml = 4 / 3 * 3.141592653589793 * 0.5**3  # 0.52 mL
    assert max(MIN_TUMOR_ML) <= sphere_10mm_ml
