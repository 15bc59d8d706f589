"""Model evaluation: figure slices, model names, the report, the real run (HD95 and lesion
detection by hand: ``test_surface_metrics.py``)."""

from __future__ import annotations

import csv
import math
import shutil
import threading

import numpy as np
import pytest
from conftest import IRCADB_CT, IRCADB_LABEL, SAMPLE_SMALL_CT, SHARED_DATA, require
from LiverXAILib.errors import Cancelled
from LiverXAILib.evaluation.evaluate import evaluate_models, model_names
from LiverXAILib.evaluation.figure_slices import choose_figure_slices
from LiverXAILib.evaluation.model_evaluation import CaseEvaluation, FigureData, ModelEvaluation
from LiverXAILib.evaluation.report import write_report
from LiverXAILib.models.catalog import resolve_model
from LiverXAILib.report.evaluation_figure import figure_size
from LiverXAILib.training.cases import discover_cases
from PIL import Image

SAMPLE_SMALL_LABEL = SHARED_DATA / "totalseg_example" / "example_ct_sm_liver.nii.gz"


# --- figure slices, names ----------------------------------------------------------------------


def test_figure_slices_prefer_tumour_then_liver():
    labels = np.zeros((40, 8, 8), dtype=np.uint8)
    labels[5:35, 2:6, 2:6] = 1
    labels[20:30, 3:5, 3:5] = 2
    labels[24, 2:6, 2:6] = 2  # largest tumour cross-section
    chosen = choose_figure_slices(labels, 4)
    assert len(chosen) == 4 and 24 in chosen and chosen == sorted(chosen)
    assert all(20 <= i < 30 for i in chosen)
    labels[labels == 2] = 1
    assert all(5 <= i < 35 for i in choose_figure_slices(labels, 4))
    assert choose_figure_slices(np.zeros((3, 4, 4), dtype=np.uint8), 5) == [0, 1, 2]
    assert choose_figure_slices(labels, 0) == []


def test_model_names_are_unique():
    assert model_names(["unet-demo", "/x/a/best.pt", "/x/b/best.pt", "/y/c.pt"]) == [
        "unet-demo",
        "a/best",
        "b/best",
        "c",
    ]
    assert model_names(["/a/m.pt", "/a/m.pt"]) == ["a/m", "a/m-2"]


# --- the report on a synthetic evaluation ------------------------------------------------------


def synthetic_evaluation(name: str = "toy/net", with_figure: bool = True) -> ModelEvaluation:
    rows = [
        CaseEvaluation("case-a", 0.9, 0.5, 4.0, 6.0, 2, 3, 1, 2, 0.2, 1.5),
        CaseEvaluation("case-b", 0.8, 1.0, 2.0, float("nan"), 0, 0, 0, 0, 0.4, 2.5),
    ]
    size = 32
    figure = None
    if with_figure:
        ct = np.full((2, size, size), -1000, dtype=np.int16)
        ct[:, 8:24, 8:24] = 60
        truth = np.zeros((2, size, size), dtype=np.uint8)
        truth[:, 8:24, 8:24] = 1
        truth[:, 12:16, 12:16] = 2
        heat = np.linspace(0, 1, 2 * size * size, dtype=np.float32).reshape(2, size, size)
        figure = FigureData(
            "case-a", [3, 7], ct, truth, truth.copy(), {"liver": heat, "tumor": heat}, (1, 1, 1)
        )
    return ModelEvaluation(
        name=name,
        checkpoint=resolve_model("unet-demo"),
        architecture="unet",
        input_size=(128, 128),
        num_slices=1,
        training_data=["somewhere | something"],
        parameters=1_942_323,
        confusion=np.array([[90, 5, 0], [5, 40, 5], [0, 5, 10]], dtype=np.int64),
        cross_entropy=0.3,
        per_case=rows,
        postprocessed=False,
        figure=figure,
    )


def test_summary_values_of_a_synthetic_evaluation():
    evaluation = synthetic_evaluation()
    assert evaluation.global_dice_liver == pytest.approx(2 * 60 / (65 + 65))
    assert evaluation.global_dice_tumor == pytest.approx(2 * 10 / (15 + 15))
    assert evaluation.mean_dice_liver == pytest.approx(0.85)
    assert evaluation.sd_dice_liver == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert evaluation.mean_hd95_tumor == 6.0  # NaN ignored
    assert evaluation.lesion_counts == {
        "true": 2,
        "predicted": 3,
        "detected": 1,
        "false_positive": 2,
    }
    assert evaluation.lesion_recall == 0.5 and evaluation.lesion_precision == pytest.approx(1 / 3)
    assert evaluation.seconds_per_case == 2.0
    assert evaluation.table["per_class"]["tumor"]["dice"] == pytest.approx(2 * 10 / 30)


def test_write_report_on_a_synthetic_evaluation(tmp_path):
    evaluations = [synthetic_evaluation(), synthetic_evaluation("other", with_figure=False)]
    written = write_report(evaluations, tmp_path / "report")
    assert set(written) == {"metrics_md", "metrics_csv", "per_case_csv", "figure_toy_net"}
    assert all(path.is_file() for path in written.values())
    assert not [p for p in (tmp_path / "report").rglob(".*")]  # no temporary files left

    text = written["metrics_md"].read_text(encoding="utf-8")
    assert "## toy/net" in text and "## other" in text and "## Comparison of models" in text
    assert "Evaluated cases (2): case-a, case-b" in text
    assert "Post-processing: none" in text
    assert "| mean |" in text and "| tumor |" in text
    assert "n/a" in text  # the NaN tumour HD95 of case-b
    assert "somewhere \\| something" in text  # table cells escaped
    comparison = text.split("## Comparison of models")[1]
    assert len([line for line in comparison.splitlines() if line.startswith("| ")]) == 3
    assert "![toy/net](figures/toy_net.png)" in text

    with open(written["metrics_csv"], newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert set(rows[0]) == {"model", "scope", "class", "metric", "value"}
    lookup = {(r["model"], r["scope"], r["class"], r["metric"]): r["value"] for r in rows}
    assert float(lookup["toy/net", "global", "tumor", "dice"]) == pytest.approx(2 / 3)
    assert float(lookup["toy/net", "global", "liver_organ", "dice_global"]) == pytest.approx(
        120 / 130
    )
    assert lookup["toy/net", "case-b", "tumor", "hd95_mm"] == ""  # NaN is empty
    assert float(lookup["other", "case-a", "liver_organ", "dice"]) == 0.9

    with open(written["per_case_csv"], newline="") as stream:
        per_case = list(csv.DictReader(stream))
    assert [(r["model"], r["case"]) for r in per_case] == [
        ("toy/net", "case-a"),
        ("toy/net", "case-b"),
        ("other", "case-a"),
        ("other", "case-b"),
    ]
    assert per_case[1]["tumor_hd95_mm"] == "" and per_case[0]["true_lesions"] == "2"

    with Image.open(written["figure_toy_net"]) as image:
        assert image.size == figure_size(2)


# --- the real thing ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lits_folder(tmp_path_factory):
    """The two real cases as a LiTS folder of symbolic links (the originals stay untouched)."""
    folder = tmp_path_factory.mktemp("lits")
    for name, target in (
        ("volume-0.nii.gz", IRCADB_CT),
        ("segmentation-0.nii.gz", IRCADB_LABEL),
        ("volume-1.nii.gz", SAMPLE_SMALL_CT),
        ("segmentation-1.nii.gz", SAMPLE_SMALL_LABEL),
    ):
        (folder / name).symlink_to(require(target))
    return folder


@pytest.fixture(scope="module")
def real_evaluation(lits_folder, tmp_path_factory):
    """unet-demo evaluated on both real cases, and its report."""
    events: list[dict] = []
    cases = discover_cases(lits_folder)
    evaluations = evaluate_models(["unet-demo"], cases, device="cpu", progress=events.append)
    written = write_report(evaluations, tmp_path_factory.mktemp("report"))
    return evaluations[0], written, events


def small_case_shape() -> tuple[int, ...]:
    from LiverXAILib.io.volumes import read_volume

    return read_volume(require(SAMPLE_SMALL_CT))[0].shape


@pytest.mark.slow
def test_real_evaluation_metrics(real_evaluation):
    demo, _, events = real_evaluation
    assert demo.name == "unet-demo" and demo.cases == ["volume-0", "volume-1"]
    assert demo.postprocessed and demo.architecture == "unet"
    # the network as trained, not the engine's copy with BatchNorm folded into convolutions
    assert demo.parameters == 1_942_323
    ircadb, small = demo.per_case
    assert ircadb.liver_dice > 0.9  # trained on this case; 0.966 after post-processing
    assert ircadb.tumor_dice > 0.8
    assert 0 < ircadb.liver_hd95_mm < 10 and 0 <= ircadb.tumor_hd95_mm < 10
    assert ircadb.true_lesions == 2 and ircadb.detected_lesions >= 1
    assert small.tumor_dice == 1.0 and small.tumor_hd95_mm == 0.0  # no tumour anywhere
    assert small.liver_dice > 0.8 and small.true_lesions == 0

    # Global Dice = 2 TP / (|P| + |T|) of the summed confusion matrix; every voxel counted once.
    cm = demo.confusion
    assert cm.sum() == 512 * 512 * 119 + int(np.prod(small_case_shape()))
    liver_tp = cm[1:, 1:].sum()
    assert demo.global_dice_liver == pytest.approx(
        2 * liver_tp / (cm[:, 1:].sum() + cm[1:, :].sum())
    )
    assert demo.global_dice_tumor == pytest.approx(2 * cm[2, 2] / (cm[:, 2].sum() + cm[2].sum()))
    # Only the IRCADb case has tumour, so its per-case tumour Dice is the global one.
    assert demo.global_dice_tumor == pytest.approx(ircadb.tumor_dice)
    assert demo.table["per_class"]["tumor"]["dice"] == pytest.approx(demo.global_dice_tumor)
    assert 0 < demo.cross_entropy < 0.1
    assert [(e["case"], e["fraction"]) for e in events if e["event"] == "case"] == [
        ("volume-0", 0.5),
        ("volume-1", 1.0),
    ]

    # The review score, run through the product pipeline on every case.
    review = demo.review
    assert set(review["aucPerCase"]) == {"volume-0", "volume-1"}
    assert review["slices"] > 50 and 0 <= review["poorSlices"] < review["slices"]
    # unet-demo was trained on both cases: no slice may be poor, and then the AUC is undefined
    assert 0 <= review["auc"] <= 1 if review["poorSlices"] else math.isnan(review["auc"])
    assert 0 <= review["flaggedShare"] <= 0.5 and 0 < review["threshold"] < 1

    figure = demo.figure
    assert figure is not None and figure.case_id == "volume-0"  # the case with tumour
    assert len(figure.slices) == 4 and figure.ct.shape == (4, 512, 512)
    for heat in figure.heatmaps.values():
        assert heat.shape == (4, 512, 512) and heat.max() == pytest.approx(1.0)
    assert all((figure.truth[i] == 2).any() for i in range(4))


@pytest.mark.slow
def test_real_evaluation_report(real_evaluation):
    demo, written, _ = real_evaluation
    assert set(written) == {"metrics_md", "metrics_csv", "per_case_csv", "figure_unet-demo"}
    assert all(path.is_file() for path in written.values())
    text = written["metrics_md"].read_text(encoding="utf-8")
    assert "Evaluated cases (2): volume-0, volume-1" in text
    assert "Post-processing: 3D clean-up" in text
    comparison = text.split("## Comparison of models")[1]
    rows = [line for line in comparison.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and rows[1].startswith("| unet-demo |")
    assert written["figure_unet-demo"] == written["metrics_md"].parent / "figures/unet-demo.png"
    with Image.open(written["figure_unet-demo"]) as image:
        assert image.size == figure_size(4)  # four slice rows
    with open(written["per_case_csv"], newline="") as stream:
        per_case = list(csv.DictReader(stream))
    assert [row["case"] for row in per_case] == ["volume-0", "volume-1"]
    assert float(per_case[0]["liver_dice"]) == pytest.approx(demo.per_case[0].liver_dice)
    assert "### Review list" in text and "slices with Dice < 0.8" in text
    with open(written["metrics_csv"], newline="") as stream:
        metrics = {(r["scope"], r["metric"]): r["value"] for r in csv.DictReader(stream)}
    assert int(metrics["global", "review_slices"]) == demo.review["slices"]
    assert metrics["global", "review_auc"] == "" or 0 <= float(metrics["global", "review_auc"]) <= 1
    assert ("volume-1", "review_auc") in metrics


@pytest.mark.slow
def test_two_models_in_one_call(lits_folder, tmp_path):
    """The same weights under two paths: two identical rows; the small case keeps it quick."""
    copy = tmp_path / "unet-copy.pt"
    shutil.copyfile(resolve_model("unet-demo"), copy)
    small = [case for case in discover_cases(lits_folder) if case.case_id == "volume-1"]
    events: list[dict] = []
    demo, other = evaluate_models(
        ["unet-demo", copy], small, device="cpu", figure_slices=2, progress=events.append
    )
    assert (demo.name, other.name) == ("unet-demo", "unet-copy")
    np.testing.assert_array_equal(other.confusion, demo.confusion)
    assert other.cross_entropy == pytest.approx(demo.cross_entropy, rel=1e-5)
    assert [e["model"] for e in events if e["event"] == "case"] == ["unet-demo", "unet-copy"]
    assert [e["event"] for e in events].count("load") == 1  # the case was read once
    assert demo.figure is not None and len(demo.figure.slices) == 2  # liver slices: no tumour

    written = write_report([demo, other], tmp_path / "report")
    assert written["figure_unet-copy"].name == "unet-copy.png"
    comparison = written["metrics_md"].read_text(encoding="utf-8").split("## Comparison")[1]
    rows = [line for line in comparison.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| unet-demo", "| unet-copy"]
    with Image.open(written["figure_unet-copy"]) as image:
        assert image.size == figure_size(2)


def test_evaluation_stops_when_cancelled(tmp_path):
    cancel = threading.Event()
    cancel.set()
    case_dir = tmp_path / "lits"
    case_dir.mkdir()
    (case_dir / "volume-1.nii.gz").symlink_to(require(SAMPLE_SMALL_CT))
    (case_dir / "segmentation-1.nii.gz").symlink_to(require(SAMPLE_SMALL_LABEL))
    with pytest.raises(Cancelled):
        evaluate_models(["unet-demo"], discover_cases(case_dir), device="cpu", cancel=cancel)


def test_evaluation_needs_models_and_cases():
    with pytest.raises(ValueError):
        evaluate_models([], [])
    with pytest.raises(ValueError):
        evaluate_models(["unet-demo"], [])
