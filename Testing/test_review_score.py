"""The review score: features on synthetic volumes whose answers are known by construction,
the logistic fit, the AUC, merging flagged slices into items, and the shipped calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from LiverXAILib.constants import LIVER
from LiverXAILib.explain.quality import assess_explanations
from LiverXAILib.explain.review_calibration import (
    FLAG_SHARE,
    calibrate,
    canonical_ijk_to_ras,
    leave_one_patient_out,
    slice_dice,
)
from LiverXAILib.explain.review_rules import LOW_ATTENTION_INSIDE, UNCERTAIN, UNCERTAINTY_METHOD
from LiverXAILib.explain.review_score import (
    FEATURES,
    LIVER_END,
    SCORE_MODEL,
    ScoreModel,
    body_outline,
    fit_logistic,
    load_score_model,
    roc_auc,
    score_review_items,
    slice_features,
)

SHAPE = (12, 64, 64)
SPACING = (5.0, 1.0, 1.0)
RADII = [0, 0, 5, 10, 14, 16, 16, 14, 10, 5, 0, 0]  # liver discs on slices 2-9


def phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (liver discs), a CT (a body disc of 28 pixels in air) and a liver heatmap on
    the liver everywhere except slice 5, where it sits on the air in a corner."""
    rows, columns = np.mgrid[: SHAPE[1], : SHAPE[2]]
    distance = np.hypot(rows - 32, columns - 32)
    labels = np.zeros(SHAPE, np.uint8)
    for index, radius in enumerate(RADII):
        if radius:
            labels[index][distance <= radius] = LIVER
    ct = np.where(distance <= 28, 40.0, -1000.0)[None].repeat(SHAPE[0], axis=0)
    ct[:, 30:34, 30:34] = -900.0  # gas inside the body still counts as body
    heatmap = np.where(labels > 0, 1.0, 0.0).astype(np.float32)
    heatmap[5] = 0.0
    heatmap[5, :4, :4] = 1.0
    return labels, ct, heatmap


def features_of(labels, ct, heatmap, uncertainty=None):
    assessment = assess_explanations({"gradcam": {LIVER: heatmap}}, labels, SPACING, uncertainty)
    per_slice = assessment.per_slice["gradcam"]["liver"]
    return slice_features(
        heatmap,
        labels,
        SPACING[0],
        per_slice["insideFraction"],
        per_slice["pointingGame"],
        assessment.border_uncertainty,
        uncertainty,
        body_outline(ct),
    )


def test_features_measure_attention_position_and_size():
    labels, ct, heatmap = phantom()
    features = features_of(labels, ct, heatmap)
    # Slices 2 and 9 hold 81 pixels (>= 50); slices with radius 0 are not scored.
    np.testing.assert_array_equal(features.slices, np.arange(2, 10))
    row = {int(s): r for r, s in enumerate(features.slices)}
    outside = features.column("outsideLiver")
    assert outside[row[5]] == pytest.approx(1.0) and outside[row[4]] == pytest.approx(0.0)
    assert features.column("pointingMiss")[row[5]] == 1.0
    assert features.column("outsideBody")[row[5]] == pytest.approx(1.0)
    assert features.column("outsideBody")[row[4]] == pytest.approx(0.0), "gas is body"
    near_end = features.column("nearEnd")
    assert near_end[row[2]] == 1.0 and near_end[row[9]] == 1.0
    assert near_end[row[3]] == pytest.approx(1 - 5 / 30) and near_end[row[5]] == 0.5
    small = features.column("smallArea")
    assert small[row[5]] == 0.0 and small[row[2]] == pytest.approx(1 - 81 / 797)
    assert list(features.end[[row[2], row[9]]]) == ["lower", "upper"]
    assert np.isnan(features.column("borderUncertainty")).all(), "no uncertainty given"


def test_uncertainty_features_read_the_border_band_and_the_liver():
    labels, ct, heatmap = phantom()
    uncertainty = np.zeros(SHAPE, np.float32)
    uncertainty[6][labels[6] > 0] = 0.6
    features = features_of(labels, ct, heatmap, uncertainty)
    row = {int(s): r for r, s in enumerate(features.slices)}
    assert features.column("liverUncertainty")[row[6]] == pytest.approx(0.6)
    assert features.column("liverUncertainty")[row[7]] == 0.0
    assert 0.1 < features.column("borderUncertainty")[row[6]] < 0.6


def test_auc_of_perfect_reversed_and_tied_scores():
    truth = [False, False, True, True]
    assert roc_auc([0.1, 0.2, 0.8, 0.9], truth) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], truth) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], truth) == 0.5
    assert np.isnan(roc_auc([0.1, 0.2], [True, True]))


def test_logistic_fit_finds_the_informative_feature():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(400, 2))
    outcome = rng.random(400) < 1 / (1 + np.exp(-(3 * values[:, 0] - 1)))
    mean, scale, coefficients, intercept = fit_logistic(values, outcome, l2=0.1)
    assert coefficients[0] > 2 and abs(coefficients[1]) < 0.5
    assert mean.shape == scale.shape == (2,) and np.isfinite(intercept)


def hand_model(threshold: float = 0.5) -> ScoreModel:
    """Weights only the liver heatmap's outside share and the position at the liver's ends."""
    weights = {"outsideLiver": 4.0, "nearEnd": 3.0}
    return ScoreModel(
        list(FEATURES),
        [0.0] * len(FEATURES),
        [1.0] * len(FEATURES),
        [weights.get(name, 0.0) for name in FEATURES],
        -2.6,
        threshold,
    )


def test_neighbouring_slices_with_the_same_reason_become_one_item():
    labels, ct, heatmap = phantom()
    heatmap[6] = 0.0
    heatmap[6, :4, :4] = 1.0  # slices 5 and 6 look beside the liver
    items = score_review_items(features_of(labels, ct, heatmap), hand_model())
    by_kind = {(i.first_slice, i.last_slice): i for i in items}
    assert set(by_kind) == {(5, 6), (2, 2), (9, 9)}
    merged = by_kind[5, 6]
    assert merged.kind == LOW_ATTENTION_INSIDE and merged.method == "gradcam"
    assert "as little as 0% of it inside" in merged.reason and "check" in merged.reason
    assert by_kind[2, 2].kind == LIVER_END and "lower (feet) end" in by_kind[2, 2].reason
    assert "upper (head) end" in by_kind[9, 9].reason
    assert [i.severity for i in items] == sorted((i.severity for i in items), reverse=True)
    assert items[0].to_dict()["firstSlice"] == items[0].first_slice


def test_nothing_is_flagged_below_the_threshold_or_without_liver():
    labels, ct, heatmap = phantom()
    assert score_review_items(features_of(labels, ct, heatmap), hand_model(0.999)) == []
    empty = np.zeros(SHAPE, np.uint8)
    assert score_review_items(features_of(empty, ct, heatmap * 0), hand_model()) == []


def test_uncertain_items_name_the_uncertainty_method():
    labels, ct, heatmap = phantom()
    uncertainty = np.zeros(SHAPE, np.float32)
    uncertainty[4:7][labels[4:7] > 0] = 0.9
    model = hand_model()
    model.coefficients = [8.0 if n == "liverUncertainty" else 0.0 for n in FEATURES]
    (item,) = score_review_items(features_of(labels, ct, heatmap, uncertainty), model)
    assert (item.first_slice, item.last_slice, item.kind) == (4, 6, UNCERTAIN)
    assert item.method == UNCERTAINTY_METHOD and "unsure" in item.reason


def synthetic_rows(patients: int = 4, per_patient: int = 120) -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for patient in range(patients):
        for index in range(per_patient):
            values = {name: float(rng.random()) for name in FEATURES}
            poor = rng.random() < 1 / (1 + np.exp(-(6 * values["outsideLiver"] - 5)))
            dice = 0.5 if poor else 0.95
            rows.append({"patient": f"p{patient}", "slice": index, "dice": dice, **values})
    return rows


def test_leave_one_patient_out_reports_auc_precision_and_a_small_flagged_share():
    rows = synthetic_rows()
    lopo = leave_one_patient_out(rows)
    assert set(lopo["perCase"]) == {"p0", "p1", "p2", "p3"}
    pooled = lopo["pooled"]
    assert pooled["auc"] > 0.75 and pooled["slices"] == len(rows)
    assert abs(pooled["flaggedShare"] - FLAG_SHARE) < 0.05
    assert 0 < pooled["precision"] <= 1
    model = calibrate(rows, "synthetic", "review-calibrate --run synthetic")
    assert model.coefficients[FEATURES.index("outsideLiver")] > 0
    assert model.calibration["leaveOnePatientOut"] == lopo
    assert "AUC" in model.calibration["summary"]


def test_slice_dice_and_the_canonical_matrix():
    from LiverXAILib.segment.orientation import canonical_orientation, canonical_spacing

    labels, _, _ = phantom()
    shifted = np.roll(labels, 1, axis=2)
    assert slice_dice(labels, labels, 5) == 1.0 and slice_dice(labels, labels, 0) == 1.0
    assert 0.8 < slice_dice(shifted, labels, 5) < 1.0
    assert slice_dice(labels, np.zeros_like(labels), 5) == 0.0
    matrix = canonical_ijk_to_ras(SPACING)
    orientation = canonical_orientation(matrix)
    assert orientation.axes == (0, 1, 2) and not any(orientation.flips)
    assert canonical_spacing(matrix, orientation) == pytest.approx(SPACING)


def test_the_shipped_score_is_calibrated_and_flags_few_slices():
    model = load_score_model()
    assert model is not None, f"{SCORE_MODEL} is missing"
    assert set(model.features) <= set(FEATURES) and 0 < model.threshold < 1
    data = json.loads(SCORE_MODEL.read_text())
    calibration = data["calibration"]
    assert len(calibration["cases"]) >= 4 and "review-calibrate" in calibration["command"]
    pooled = calibration["leaveOnePatientOut"]["pooled"]
    assert pooled["flaggedShare"] <= 0.12 and pooled["auc"] > 0.5


def run_on_sample(flip_slices: bool = False):
    """The product pipeline on the bundled sample CT (Grad-CAM, test-time augmentation),
    optionally stored with its slices in the opposite order."""
    from conftest import SAMPLE_CT, require, restored
    from LiverXAILib.constants import TUMOR
    from LiverXAILib.io.volumes import read_volume
    from LiverXAILib.models.catalog import resolve_model
    from LiverXAILib.models.checkpoints import load_checkpoint
    from LiverXAILib.segment.inference import SliceInferenceEngine, choose_device
    from LiverXAILib.segment.pipeline import run_pipeline
    from LiverXAILib.segment.uncertainty import UncertaintySpec

    model, metadata = load_checkpoint(resolve_model("unet-demo"))
    engine = SliceInferenceEngine(model, metadata.input_spec(), choose_device("cpu"))
    array, ijk_to_ras = read_volume(require(SAMPLE_CT))
    if flip_slices:
        array, ijk_to_ras = restored(array, ijk_to_ras, (0, 1, 2), (True, False, False))
    return run_pipeline(
        array, ijk_to_ras, engine, (LIVER, TUMOR), ("gradcam",), UncertaintySpec.from_name("tta")
    )


@pytest.fixture(scope="module")
def sample_result():
    return run_on_sample()


def test_the_sample_gets_a_short_review_list_in_plain_words(sample_result):
    review, features = sample_result.review, sample_result.slice_features
    assert features is not None and features.slices.size > 20
    assert len(review) <= 5
    scored = sample_result.quality["reviewScore"]
    assert scored["scoredSlices"] == features.slices.size
    assert scored["flaggedSlices"] <= 0.15 * scored["scoredSlices"]
    for item in review:
        assert item["firstSlice"] <= item["slice"] <= item["lastSlice"]
        assert "check" in item["reason"]
        assert item["class"] == "liver" and 0 < item["severity"] <= 1
        first, last = item["firstSlice"], item["lastSlice"]
        ranged = item["reason"].startswith(f"slices {first}–{last}: ")
        assert ranged == (first != last)  # a single slice is named by the item's "slice"
    assert [i["severity"] for i in review] == sorted((i["severity"] for i in review), reverse=True)


@pytest.mark.slow
def test_review_items_follow_the_input_slice_numbering(sample_result):
    """Stored feet-to-head or head-to-feet, the same slices are flagged under the numbers
    Slicer shows, and the reasons name them."""
    flipped = run_on_sample(flip_slices=True)
    depth = sample_result.labels.shape[0]
    assert len(flipped.review) == len(sample_result.review)
    for item, other in zip(sample_result.review, flipped.review, strict=True):
        assert other["canonicalSlice"] == item["canonicalSlice"]
        assert other["slice"] == depth - 1 - item["slice"]
        assert (other["firstSlice"], other["lastSlice"]) == (
            depth - 1 - item["lastSlice"],
            depth - 1 - item["firstSlice"],
        )
        first, last = other["firstSlice"], other["lastSlice"]
        if first != last:
            assert other["reason"].startswith(f"slices {first}–{last}: ")
        assert other["reason"].split(": ", 1)[-1] == item["reason"].split(": ", 1)[-1]


@pytest.mark.slow
def test_review_calibrate_runs_each_fold_model_on_its_held_out_patient(tmp_path, capsys):
    """A two-fold "crossval run" of real cases (the bundled model stands in for each fold's):
    the command writes the score, the per-slice rows and the leave-one-patient-out figures."""
    import shutil

    from conftest import SHARED_DATA, require
    from LiverXAILib.cli.main import main
    from LiverXAILib.explain.review_calibration import read_rows
    from LiverXAILib.models.catalog import resolve_model

    run = tmp_path / "run"
    cases, folds = [], {}
    for patient in ("hcctace_0697", "hcctace_2144"):
        folder = require(SHARED_DATA / patient)
        cases.append(
            {
                "image": str(folder / "ct.nii.gz"),
                "label": str(folder / "label.nii.gz"),
                "case_id": patient,
                "patient": patient,
            }
        )
        folds[patient] = [patient]
        (run / f"fold-{patient}").mkdir(parents=True)
        (run / f"fold-{patient}" / "result.json").write_text('{"status": "done"}')
        shutil.copy(resolve_model("unet-demo"), run / f"fold-{patient}" / "last.pt")
    (run / "crossval.json").write_text(json.dumps({"cases": cases, "folds": folds}))
    out = tmp_path / "score.json"
    assert main(["review-calibrate", "--run", str(run), "--out", str(out), "--device", "cpu"]) == 0
    model = load_score_model(out)
    assert model is not None and 0 < model.threshold < 1
    rows = read_rows(out.with_suffix(".csv"))
    assert {r["case"] for r in rows} == set(folds) and len(rows) > 20
    assert all(0 <= float(r["dice"]) <= 1 for r in rows)
    lopo = model.calibration["leaveOnePatientOut"]
    assert set(lopo["perCase"]) == set(folds) and lopo["pooled"]["slices"] == len(rows)
    assert set(model.calibration["rulesAuc"]["perCase"]) == set(folds)  # the list before
    assert "held-out case" in capsys.readouterr().out
