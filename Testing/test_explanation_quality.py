"""Explanation quality on synthetic volumes whose right answers are known by construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from LiverXAILib.constants import LIVER, TUMOR
from LiverXAILib.explain.quality import (
    ATTENTION_ON_BACKGROUND,
    LOW_ATTENTION_INSIDE,
    UNCERTAIN,
    UNCERTAINTY_METHOD,
    ExplanationAssessment,
    ReviewItem,
    assess_explanations,
    attention_inside,
    pointing_game,
    rank_agreement,
    region_for_class,
    review_list,
    with_margin,
)
from scipy import ndimage

SHAPE = (4, 64, 64)
ISOTROPIC = (2.0, 1.0, 1.0)


def liver_block() -> np.ndarray:
    """Labels with a 20 x 15 liver block (rows 20-39, columns 5-19) on slices 1 and 2, and a
    4 x 4 tumour in it on slice 2."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:3, 20:40, 5:20] = LIVER
    labels[2, 28:32, 10:14] = TUMOR
    return labels


def disc_labels(radius: float = 20.0) -> np.ndarray:
    """A liver disc of ``radius`` pixels centred on slices 1 and 2."""
    rows, columns = np.mgrid[: SHAPE[1], : SHAPE[2]]
    disc = (rows - 32) ** 2 + (columns - 32) ** 2 <= radius**2
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:3][:, disc] = LIVER
    return labels


# --- regions -------------------------------------------------------------------------------
def test_region_for_class_counts_the_tumour_as_liver():
    labels = liver_block()
    liver, tumour = region_for_class(labels, LIVER), region_for_class(labels, TUMOR)
    assert liver.dtype == bool and tumour.dtype == bool
    assert liver.sum() == 2 * 20 * 15 and tumour.sum() == 16
    assert np.all(liver[tumour])
    with pytest.raises(ValueError):
        region_for_class(labels, 0)


def test_margin_is_an_ellipse_in_pixels_for_anisotropic_spacing():
    region = np.zeros((3, 31, 31), bool)
    region[1, 15, 15] = True
    grown = with_margin(region, (3.0, 1.0, 2.0), margin_mm=5.0)
    assert not grown[0].any() and not grown[2].any(), "no growth across slices"
    rows, columns = np.nonzero(grown[1])
    assert (rows.min(), rows.max()) == (10, 20), "5 mm at 1 mm rows: 5 pixels"
    assert (columns.min(), columns.max()) == (13, 17), "5 mm at 2 mm columns: 2 pixels"
    offsets_r, offsets_c = np.mgrid[-15:16, -15:16]
    ellipse = (offsets_r * 1.0) ** 2 + (offsets_c * 2.0) ** 2 <= 25.0
    np.testing.assert_array_equal(grown[1], ellipse)


def test_margin_matches_a_per_slice_distance_transform():
    rng = np.random.default_rng(3)
    region = ndimage.binary_opening(rng.random((5, 48, 40)) > 0.93, np.ones((1, 2, 2), bool))
    region[:, 0, 7] = True  # touches the border of the volume
    region[2] = False
    spacing = (2.5, 0.7, 0.9)
    grown = with_margin(region, spacing, margin_mm=5.0)
    for index in range(region.shape[0]):
        if not region[index].any():
            assert not grown[index].any()
            continue
        distance = ndimage.distance_transform_edt(~region[index], sampling=spacing[1:])
        np.testing.assert_array_equal(grown[index], distance <= 5.0 + 1e-6)
    np.testing.assert_array_equal(with_margin(region, spacing, margin_mm=0.0), region)


def test_empty_region_has_an_empty_margin():
    assert not with_margin(np.zeros(SHAPE, bool), ISOTROPIC).any()


# --- attention inside and pointing game ----------------------------------------------------
def test_heatmap_entirely_inside_scores_one_and_empty_slices_are_nan():
    region = region_for_class(liver_block(), LIVER)
    heatmap = np.where(region, np.float32(0.6), np.float32(0.0))
    heatmap[1, 30, 10] = 1.0
    margin = with_margin(region, ISOTROPIC)
    fractions, volume = attention_inside(heatmap, margin)
    assert math.isnan(fractions[0]) and math.isnan(fractions[3])
    np.testing.assert_allclose(fractions[1:3], 1.0)
    assert volume == pytest.approx(1.0)
    hits, rate = pointing_game(heatmap, margin, region)
    assert math.isnan(hits[0]) and math.isnan(hits[3])
    np.testing.assert_array_equal(hits[1:3], [1.0, 1.0])
    assert rate == 1.0


def test_inside_fraction_counts_the_margin_and_splits_mass_exactly():
    region = region_for_class(liver_block(), LIVER)
    margin = with_margin(region, ISOTROPIC, margin_mm=5.0)
    heatmap = np.zeros(SHAPE, np.float32)
    heatmap[1, 30, 22] = 0.5  # 3 mm right of the liver: inside the margin
    heatmap[1, 30, 30] = 0.5  # 11 mm right: outside
    fractions, volume = attention_inside(heatmap, margin)
    assert fractions[1] == pytest.approx(0.5)
    assert volume == pytest.approx(0.5)
    no_margin_fractions, _ = attention_inside(heatmap, region)
    assert no_margin_fractions[1] == 0.0
    assert math.isnan(attention_inside(np.zeros(SHAPE, np.float32), margin)[1])


def test_pointing_game_counts_only_slices_with_mass_and_region():
    region = region_for_class(liver_block(), LIVER)
    margin = with_margin(region, ISOTROPIC)
    heatmap = np.zeros(SHAPE, np.float32)
    heatmap[0, 5, 5] = 1.0  # hot, but no liver on slice 0: does not count
    heatmap[1, 25, 10] = 0.8  # peak in the liver: hit
    heatmap[2, 25, 10] = 0.3
    heatmap[2, 60, 60] = 0.9  # peak far outside: miss
    hits, rate = pointing_game(heatmap, margin, region)
    assert math.isnan(hits[0]) and math.isnan(hits[3])
    assert hits[1] == 1.0 and hits[2] == 0.0
    assert rate == 0.5
    _, no_rate = pointing_game(np.zeros(SHAPE, np.float32), margin, region)
    assert math.isnan(no_rate)


# --- rank agreement ------------------------------------------------------------------------
def test_rank_agreement_is_one_for_a_monotone_transform_and_near_zero_for_noise():
    rng = np.random.default_rng(0)
    region = np.zeros((4, 80, 80), bool)
    region[:, 10:70, 10:70] = True
    heatmap = rng.random(region.shape, dtype=np.float32)
    assert rank_agreement(heatmap, np.sqrt(heatmap) * 3 + 1, region) == pytest.approx(1.0)
    assert rank_agreement(heatmap, 1 - heatmap, region) == pytest.approx(-1.0)
    noise = rng.random(region.shape, dtype=np.float32)
    assert abs(rank_agreement(heatmap, noise, region)) < 0.05


def test_rank_agreement_subsamples_reproducibly():
    rng = np.random.default_rng(1)
    region = np.ones((2, 100, 100), bool)
    base = rng.random(region.shape, dtype=np.float32)
    other = base + rng.random(region.shape, dtype=np.float32)
    full = rank_agreement(base, other, region)
    sampled = rank_agreement(base, other, region, max_voxels=5_000, seed=7)
    assert sampled == rank_agreement(base, other, region, max_voxels=5_000, seed=7)
    assert sampled == pytest.approx(full, abs=0.03)


def test_rank_agreement_is_nan_for_tiny_regions_and_constant_maps():
    rng = np.random.default_rng(2)
    heatmap = rng.random(SHAPE, dtype=np.float32)
    tiny = np.zeros(SHAPE, bool)
    tiny[1, 0, :9] = True
    assert math.isnan(rank_agreement(heatmap, heatmap, tiny))
    region = region_for_class(liver_block(), LIVER)
    assert math.isnan(rank_agreement(heatmap, np.zeros(SHAPE, np.float32), region))
    assert math.isnan(rank_agreement(heatmap, heatmap, np.zeros(SHAPE, bool)))


# --- review list ---------------------------------------------------------------------------
def test_peak_20_mm_outside_is_attention_on_background_with_the_distance():
    labels = liver_block()
    heatmap = np.zeros(SHAPE, np.float32)
    heatmap[1, 30, 39] = 0.9  # the liver ends at column 19: 20 mm away
    heatmap[1, 30:32, 10:12] = 0.1  # a little mass inside
    heatmap[2, 30, 10] = 0.4  # the other liver slice looks inside: the case's typical slice
    items = review_list({"gradcam": {LIVER: heatmap}}, labels, ISOTROPIC, method_labels={})
    background = [i for i in items if i.kind == ATTENTION_ON_BACKGROUND]
    assert len(background) == 1
    item = background[0]
    assert (item.slice, item.class_id, item.method) == (1, LIVER, "gradcam")
    assert "20 mm" in item.reason and "liver" in item.reason
    assert item.severity == pytest.approx(0.9 * 0.9 / 1.3)
    low = [i for i in items if i.kind == LOW_ATTENTION_INSIDE]
    assert [i.slice for i in low] == [1]
    typical = (0.4 / 1.3 + 1.0) / 2  # median inside fraction over the two liver slices
    assert low[0].severity == pytest.approx(1 - (0.4 / 1.3) / typical)
    assert items == sorted(items, key=lambda i: -i.severity)


def test_distance_in_the_reason_uses_the_row_spacing():
    labels = liver_block()
    heatmap = np.zeros(SHAPE, np.float32)
    heatmap[1, 55, 12] = 1.0  # 16 rows below the liver's last row (39) at 0.5 mm
    items = review_list({"gradcam": {LIVER: heatmap}}, labels, (2.0, 0.5, 1.0))
    (background,) = [i for i in items if i.kind == ATTENTION_ON_BACKGROUND]
    assert "8.0 mm" in background.reason


def test_hot_slice_without_the_class_says_none_is_predicted():
    labels = liver_block()
    heatmap = np.zeros(SHAPE, np.float32)
    heatmap[3, 10, 10] = 0.7  # no tumour on slice 3
    heatmap[2, 29, 11] = 1.0  # peak in the tumour on slice 2: fine
    heatmap[0, 10, 10] = 0.4  # below the hot threshold: not listed
    items = review_list({"gradcam": {TUMOR: heatmap}}, labels, ISOTROPIC)
    assert [(i.slice, i.class_id, i.kind) for i in items] == [(3, TUMOR, ATTENTION_ON_BACKGROUND)]
    assert "no tumour is predicted on this slice" in items[0].reason
    assert items[0].severity == pytest.approx(0.7)


def test_low_attention_inside_names_the_method_and_respects_min_region_voxels():
    labels = liver_block()
    labels[3, 0:5, 0:5] = LIVER  # 25 voxels: below min_region_voxels
    heatmap = np.zeros(SHAPE, np.float32)
    heatmap[1, 30, 10] = 0.23  # 23% inside ...
    heatmap[1, 2:4, 40:42] = 0.77 / 4  # ... 77% far outside, but never hot
    heatmap[3, 50, 50] = 0.3  # outside the tiny region, cold
    heatmap[2, 30, 10] = 0.3  # the other liver slice looks inside (typical for this case)
    items = review_list(
        {"gradcam": {LIVER: heatmap}}, labels, ISOTROPIC, method_labels={"gradcam": "Grad-CAM"}
    )
    assert [(i.slice, i.kind) for i in items] == [(1, LOW_ATTENTION_INSIDE)]
    assert items[0].severity == pytest.approx(1 - 0.23 / ((0.23 + 1.0) / 2))
    assert "62% is typical for this case" in items[0].reason
    expected = "only 23% of the liver Grad-CAM lies inside the predicted liver (5 mm margin)"
    assert expected in items[0].reason


def test_low_attention_inside_is_relative_to_the_case():
    """A coarse map that spills equally on every slice lists none; an outlier slice is listed."""
    labels = liver_block()
    heatmap = np.zeros(SHAPE, np.float32)
    for index in (1, 2):
        heatmap[index, 30, 10] = 0.3  # 30% inside ...
        heatmap[index, 2, 40:47] = 0.1  # ... 70% outside, never hot, on both slices
    assert review_list({"gradcam": {LIVER: heatmap}}, labels, ISOTROPIC) == []
    heatmap[1, 30, 10] = 0.05  # slice 1 now spills far more than the case's usual
    items = review_list({"gradcam": {LIVER: heatmap}}, labels, ISOTROPIC)
    assert [(i.slice, i.kind) for i in items] == [(1, LOW_ATTENTION_INSIDE)]


def test_review_list_is_sorted_by_severity_then_slice():
    labels = np.zeros(SHAPE, np.uint8)
    heatmaps = {}
    for method, peaks in {"a": (0.6, 0.9, 0.6, 0.8), "b": (0.9, 0.7, 0.5, 0.6)}.items():
        heatmap = np.zeros(SHAPE, np.float32)
        for index, peak in enumerate(peaks):
            heatmap[index, 10, 10] = peak
        heatmaps[method] = {LIVER: heatmap}
    items = review_list(heatmaps, labels, ISOTROPIC)
    keys = [(-i.severity, i.slice) for i in items]
    assert keys == sorted(keys)
    assert [(i.slice, i.method) for i in items[:3]] == [(0, "b"), (1, "a"), (3, "a")]
    assert len(items) == 8


def test_uncertain_slices_use_the_boundary_band():
    labels = disc_labels(radius=20.0)
    uncertainty = np.zeros(SHAPE, np.float32)
    uncertainty[1] = 0.8  # unsure everywhere on slice 1
    rows, columns = np.mgrid[: SHAPE[1], : SHAPE[2]]
    deep = (rows - 32) ** 2 + (columns - 32) ** 2 <= 12**2  # more than 5 mm from the border
    uncertainty[2][deep] = 1.0  # slice 2: only the deep interior, outside the band
    heatmap = np.where(labels > 0, np.float32(1.0), np.float32(0.0))
    items = review_list({"gradcam": {LIVER: heatmap}}, labels, ISOTROPIC, uncertainty=uncertainty)
    assert [(i.slice, i.class_id, i.method, i.kind) for i in items] == [
        (1, LIVER, UNCERTAINTY_METHOD, UNCERTAIN)
    ]
    assert items[0].severity == pytest.approx(0.8)
    assert "0.80" in items[0].reason
    assert review_list({"gradcam": {LIVER: heatmap}}, labels, ISOTROPIC) == []


def test_a_sharp_transition_at_the_border_is_not_uncertain():
    labels = disc_labels(radius=20.0)
    boundary = labels[1] != ndimage.binary_erosion(labels[1]).astype(np.uint8)
    uncertainty = np.zeros(SHAPE, np.float32)
    uncertainty[1][boundary] = 1.0  # the one-pixel transition every network has
    items = review_list({}, labels, ISOTROPIC, uncertainty=uncertainty)
    assert items == []
    assert review_list({}, labels, ISOTROPIC, uncertainty=uncertainty, uncertainty_threshold=0.05)


def test_review_item_to_dict():
    item = ReviewItem(3, TUMOR, "gradcam", 0.123456, "why", ATTENTION_ON_BACKGROUND)
    assert item.to_dict() == {
        "slice": 3,
        "firstSlice": 3,
        "lastSlice": 3,
        "classId": TUMOR,
        "class": "tumor",
        "method": "gradcam",
        "severity": 0.1235,
        "reason": "why",
        "kind": ATTENTION_ON_BACKGROUND,
    }


# --- the whole assessment ------------------------------------------------------------------
def test_assessment_summarises_every_method_and_class_and_is_json_ready():
    rng = np.random.default_rng(4)
    labels = liver_block()
    liver_map = np.where(labels > 0, np.float32(1.0), np.float32(0.0)) * rng.random(
        SHAPE, dtype=np.float32
    )
    tumour_map = np.zeros(SHAPE, np.float32)
    tumour_map[3, 50, 50] = 1.0  # hot where no tumour is predicted
    heatmaps = {
        "gradcam": {LIVER: liver_map, TUMOR: tumour_map},
        "gradcam++": {LIVER: liver_map**2, TUMOR: tumour_map},
        "integrated-gradients": {LIVER: rng.random(SHAPE, dtype=np.float32)},
    }
    uncertainty = np.full(SHAPE, 0.9, np.float32)
    result = assess_explanations(
        heatmaps, labels, ISOTROPIC, uncertainty, method_labels={"gradcam": "Grad-CAM"}
    )
    assert isinstance(result, ExplanationAssessment)
    liver = result.per_class["gradcam"]["liver"]
    assert liver["insideFraction"] == pytest.approx(1.0)
    assert liver["pointingGameHitRate"] == 1.0 and liver["slicesExplained"] == 2
    tumour = result.per_class["gradcam"]["tumor"]
    assert tumour["insideFraction"] == 0.0 and math.isnan(tumour["pointingGameHitRate"])
    assert tumour["slicesExplained"] == 0
    assert set(result.per_class["integrated-gradients"]) == {"liver"}
    pairs = {(tuple(a["methods"]), a["class"]): a["spearman"] for a in result.agreement}
    assert len(pairs) == 4  # three pairs for the liver, one for the tumour
    assert pairs[(("gradcam", "gradcam++"), "liver")] == pytest.approx(1.0)
    assert math.isnan(pairs[(("gradcam", "gradcam++"), "tumor")])  # both maps zero there
    per_slice = result.per_slice["gradcam"]["liver"]
    assert len(per_slice["insideFraction"]) == SHAPE[0] and math.isnan(per_slice["pointingGame"][0])
    kinds = {(i.slice, i.class_id, i.kind) for i in result.review}
    assert (3, TUMOR, ATTENTION_ON_BACKGROUND) in kinds
    assert {(1, LIVER, UNCERTAIN), (2, LIVER, UNCERTAIN)} <= kinds

    data = result.to_dict()
    assert list(data) == ["perClass", "agreement", "review", "perSlice"]
    text = json.dumps(data, allow_nan=False)
    again = json.loads(text)
    assert again["perClass"]["gradcam"]["tumor"]["pointingGameHitRate"] is None
    assert again["perSlice"]["gradcam"]["liver"]["insideFraction"][0] is None
    assert again["review"][0]["severity"] == pytest.approx(result.review[0].severity, abs=1e-4)


def test_assessment_without_any_prediction_is_still_json_ready():
    heatmaps = {"gradcam": {LIVER: np.zeros(SHAPE, np.float32)}}
    result = assess_explanations(heatmaps, np.zeros(SHAPE, np.uint8), ISOTROPIC)
    assert result.review == [] and result.agreement == []
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["perClass"] == {
        "gradcam": {
            "liver": {"insideFraction": None, "pointingGameHitRate": None, "slicesExplained": 0}
        }
    }


def test_mismatched_shapes_are_refused():
    labels = liver_block()
    with pytest.raises(ValueError):
        review_list({"gradcam": {LIVER: np.zeros((4, 64, 63), np.float32)}}, labels, ISOTROPIC)
    with pytest.raises(ValueError):
        assess_explanations({}, labels, ISOTROPIC, uncertainty=np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError):
        with_margin(labels > 0, (1.0, 1.0))
