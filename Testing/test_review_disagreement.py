"""Disagreement between explanation methods as a review-score feature, and how the score
treats a feature that was not measured (no second method, no uncertainty)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from LiverXAILib.explain.review_calibration import calibrate
from LiverXAILib.explain.review_score import (
    FEATURES,
    METHODS_DISAGREE,
    ScoreModel,
    body_outline,
    score_review_items,
    slice_features,
    weighted_terms,
)
from test_review_score import SPACING, features_of, phantom, synthetic_rows


def disagreement_features(other_maps):
    labels, ct, heatmap = phantom()
    features = slice_features(
        heatmap, labels, SPACING[0], None, None, None, None, body_outline(ct), other_maps
    )
    return features, {int(s): r for r, s in enumerate(features.slices)}


def test_disagreement_is_measured_only_when_a_second_method_ran():
    labels, ct, heatmap = phantom()
    assert np.isnan(features_of(labels, ct, heatmap).column("methodDisagreement")).all()
    other = heatmap.copy()
    other[6] = 0.0
    other[6, -4:, -4:] = 1.0  # the second method looks at the opposite corner on slice 6
    features, row = disagreement_features([other])
    disagreement = features.column("methodDisagreement")
    assert disagreement[row[4]] == pytest.approx(0.0, abs=1e-9), "same map: no disagreement"
    assert disagreement[row[6]] > 1.0, "anti-correlated maps"
    both, _ = disagreement_features([heatmap, other])  # compared with the others' mean
    assert 0.0 < both.column("methodDisagreement")[row[6]] < disagreement[row[6]]


def test_a_feature_not_measured_leaves_the_score_to_the_measured_ones():
    weights = np.array([1.0, 1.0, 2.0, 0.0])
    z = np.array([[1.0, 1.0, 1.0, 5.0], [1.0, 1.0, np.nan, 5.0], [np.nan] * 4])
    terms = weighted_terms(z, weights)
    np.testing.assert_allclose(terms[0], [1.0, 1.0, 2.0, 0.0])
    np.testing.assert_allclose(terms[1], [2.0, 2.0, 0.0, 0.0])  # scaled by 4 / 2
    np.testing.assert_allclose(terms[2], 0.0)
    model = ScoreModel(list(FEATURES), [0.0] * 8, [1.0] * 8, [1.0] * 8, 0.0, 0.5)
    full = np.full((1, len(FEATURES)), 0.5)
    missing = full.copy()
    missing[0, FEATURES.index("methodDisagreement")] = np.nan
    assert model.probability(missing) == pytest.approx(model.probability(full))


def test_slices_where_the_methods_disagree_become_one_item_in_plain_words():
    labels, ct, heatmap = phantom()
    other = heatmap.copy()
    other[6:8] = 0.0
    other[6:8, -4:, -4:] = 1.0
    features, _ = disagreement_features([other])
    weights = [1.0 if name == "methodDisagreement" else 0.0 for name in FEATURES]
    model = ScoreModel(list(FEATURES), [0.0] * 8, [1.0] * 8, weights, -0.5, 0.5)
    (item,) = score_review_items(features, model, "gradcam", "Grad-CAM")
    assert (item.first_slice, item.last_slice, item.kind) == (6, 7, METHODS_DISAGREE)
    assert item.method == "gradcam"
    assert "different places" in item.reason and "check the liver border" in item.reason


def test_calibrating_without_a_second_method_gives_the_disagreement_no_weight():
    rows = synthetic_rows()
    for row in rows:
        del row["methodDisagreement"]  # rows of a single-method calibration
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" on the missing column
        model = calibrate(rows, "synthetic", "review-calibrate --run synthetic")
    assert model.coefficients[FEATURES.index("methodDisagreement")] == 0.0
    assert np.isnan(model.calibration["singleFeatureAuc"]["methodDisagreement"])
    assert model.coefficients[FEATURES.index("outsideLiver")] > 0
