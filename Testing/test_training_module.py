"""The Training module's logic without Qt: commands, options, progress text, curves, logic.

Two kinds of test:

- Commands, options, progress text and the curves (on a headless slicer-core scene) are tested
  directly.
- ``slow`` tests run the real trainer and evaluation (``python -m LiverXAILib train|evaluate``)
  through ``LiverXAITrainingLogic`` on a small LiTS-layout folder.

The child-process runner itself is tested in ``test_training_process.py``.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
from conftest import SAMPLE_SMALL_CT, SHARED_DATA, require
from LiverXAILib.slicer.training_logic import LiverXAITrainingLogic, read_history_csv
from LiverXAILib.slicer.training_plots import HISTORY_COLUMNS, TrainingPlots, history_rows
from LiverXAILib.training.options import (
    AUGMENTATIONS,
    FALLBACK_ARCHITECTURES,
    TrainingOptions,
    available_architectures,
    build_evaluate_command,
    build_train_command,
    default_model_name,
)
from LiverXAILib.training.process import ChildProcess
from LiverXAILib.training.progress import EXIT_EVENT, Progress, format_duration

SAMPLE_SMALL_LABEL = SHARED_DATA / "totalseg_example" / "example_ct_sm_liver.nii.gz"
TRAINER_TIMEOUT = 900  # real trainer on a 2-core CPU


# --- commands and options --------------------------------------------------------------------
def test_train_command_follows_the_trainer_contract(tmp_path):
    options = TrainingOptions(data=tmp_path / "data", out=tmp_path / "out", epochs=7)
    command = build_train_command(options, python="PythonSlicer")
    assert command == [
        "PythonSlicer", "-m", "LiverXAILib", "train",
        "--data", str(tmp_path / "data"), "--arch", "unet", "--epochs", "7",
        "--out", str(tmp_path / "out"), "--size", "128", "--slices", "1", "--loss", "dicece",
        "--batch-size", "16", "--lr", "0.001", "--schedule", "none", "--patience", "15",
        "--augment", "rotate,zoom,noise,intensity", "--keep-empty", "0.2", "--device", "auto",
    ]  # fmt: skip


def test_train_command_optional_parts(tmp_path):
    options = TrainingOptions(
        data="cases.csv",
        out="run",
        arch="transunet",
        augment=(),
        cache=tmp_path / "cache",
        register="my-model",
        resume=True,
        lr=2.5e-4,
    )
    command = build_train_command(options, python="py")
    assert command[command.index("--augment") + 1] == "none"
    assert command[command.index("--cache") + 1] == str(tmp_path / "cache")
    assert command[command.index("--register") + 1] == "my-model"
    assert command[command.index("--lr") + 1] == "0.00025"
    assert command[-1] == "--resume"
    flipped = TrainingOptions(data="d", out="o", augment=["intensity", "flip"])
    command = build_train_command(flipped, python="py")
    assert command[command.index("--augment") + 1] == "flip,intensity"  # canonical order


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": ""}, "Choose the training data"),
        ({"data": "missing-folder"}, "Training data not found"),
        ({"out": ""}, "Choose an output folder"),
        ({"size": 512}, "Unknown input size"),
        ({"slices": 2}, "Unknown slices"),
        ({"loss": "focal"}, "Unknown loss"),
        ({"augment": ("rotate", "mixup")}, "Unknown augmentation"),
        ({"epochs": 0}, "at least one epoch"),
        ({"lr": 0.0}, "learning rate must be positive"),
        ({"keep_empty": 1.5}, "lie in [0, 1]"),
        ({"register": "my model"}, "use up to 64 letters"),
        ({"register": "unet-demo"}, "bundled model"),
        ({"resume": True}, "Nothing to resume"),
    ],
)
def test_options_are_checked_before_anything_starts(tmp_path, change, message):
    data = tmp_path / "data"
    data.mkdir()
    values = {"data": data, "out": tmp_path / "out", **change}
    if values["data"] == "missing-folder":
        values["data"] = tmp_path / "missing-folder"
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainingOptions(**values).validate()


def test_valid_options_pass(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "last.pt").write_bytes(b"")
    TrainingOptions(data=tmp_path, out=tmp_path / "out", register="mine", resume=True).validate()


def test_default_model_name_is_a_valid_catalog_name():
    assert default_model_name("/runs/LiTS U-Net (v2)") == "LiTS-U-Net-v2"
    assert default_model_name("runs/unet_256") == "unet_256"
    assert default_model_name("///") == "liverxai-model"
    assert len(default_model_name("x" * 100)) == 64


def test_evaluate_command(tmp_path):
    command = build_evaluate_command(
        ["a/best.pt", "unet-demo"], "data", "out", split="a/split.json", part="all", python="py"
    )
    assert command == [
        "py", "-m", "LiverXAILib", "evaluate", "--model", "a/best.pt", "--model", "unet-demo",
        "--data", "data", "--out", "out", "--split", "a/split.json", "--part", "all",
        "--device", "auto",
    ]  # fmt: skip
    single = build_evaluate_command(Path("best.pt"), "data", "out", part="test", python="py")
    assert "--part" not in single and single[4:6] == ["--model", "best.pt"]
    with pytest.raises(ValueError):
        build_evaluate_command([], "data", "out")
    with pytest.raises(ValueError):
        build_evaluate_command("m", "data", "out", split="s.json", part="holdout")


def test_option_lists_match_the_trainer():
    from LiverXAILib.models.networks import available_models
    from LiverXAILib.training.augmentation import AUGMENTATIONS as TRAINER_AUGMENTATIONS
    from LiverXAILib.training.augmentation import DEFAULT_AUGMENTATIONS

    assert AUGMENTATIONS == TRAINER_AUGMENTATIONS
    assert tuple(TrainingOptions.augment) == DEFAULT_AUGMENTATIONS  # the class default
    assert available_architectures() == available_models()
    assert set(available_models()) <= set(FALLBACK_ARCHITECTURES)


def test_format_duration():
    assert format_duration(None) == ""
    assert format_duration(float("nan")) == ""
    assert format_duration(42.4) == "42 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3720) == "1 h 02 min"


def test_progress_follows_a_training_run():
    progress = Progress()
    progress.update({"event": "start", "arch": "unet", "epochs": 4, "device": "cpu"})
    assert "unet" in progress.message and progress.fraction == 0
    progress.update({"event": "split", "train": [1, 2, 3], "validation": [4], "test": []})
    assert progress.message == "Cases: 3 training, 1 validation, 0 test."
    progress.update({"event": "cache", "case": "7", "index": 1, "total": 4, "cached": False})
    assert progress.fraction == 0.5 and "Preparing case 7 (2/4)" in progress.message
    progress.update({"event": "data", "train_slices": 100, "validation_slices": 20})
    progress.update({"event": "step", "epoch": 1, "step": 5, "steps": 10, "loss": 0.25,
                     "eta_seconds": 125})  # fmt: skip
    assert progress.fraction == pytest.approx(1.5 / 4)
    assert progress.message == "Epoch 2/4, step 5/10, loss 0.250 — 2 min 05 s left in this epoch"
    progress.update({"event": "epoch", "epoch": 1, "epochs": 4, "loss": 0.2,
                     "val_liver_dice": 0.9, "val_tumor_dice": None, "improved": True,
                     "eta_seconds": 10})  # fmt: skip
    assert progress.fraction == 0.5 and progress.epoch == 1
    assert progress.message.endswith("(best so far) — 10 s left")
    assert "liver 0.900, tumour —" in progress.message and "best so far" in progress.message
    progress.update({"event": "stopped", "epoch": 2})
    assert progress.phase == "stopped" and "Stopped in epoch 3" in progress.message
    progress.update({"event": EXIT_EVENT, "returncode": 0})
    assert progress.phase == "stopped"


def test_progress_of_a_failed_and_of_an_evaluation_run():
    failed = Progress()
    failed.update({"event": EXIT_EVENT, "returncode": 1})
    assert failed.phase == "failed" and "code 1" in failed.message
    evaluation = Progress()
    evaluation.update({"event": "case", "model": "m", "case": "3", "index": 0, "total": 2})
    assert evaluation.fraction == 0.5 and evaluation.phase == "evaluating"
    evaluation.update({"event": "done", "metrics_md": "out/metrics.md", "metrics_csv": "x"})
    assert evaluation.phase == "finished" and "out/metrics.md" in evaluation.message


# --- curves on a MRML scene ------------------------------------------------------------------
EPOCHS = [
    {"event": "epoch", "epoch": 0, "loss": 1.0, "val_loss": 1.1, "val_liver_dice": 0.4,
     "val_tumor_dice": 0.0},
    {"event": "epoch", "epoch": 1, "loss": 0.5, "val_loss": None, "val_liver_dice": 0.7},
]  # fmt: skip


def test_curves_table_and_chart(headless):
    plots = TrainingPlots(headless.scene)
    plots.update(EPOCHS)
    table = plots.tableNode
    assert table.IsA("vtkMRMLTableNode") and table.GetNumberOfRows() == 2
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == list(
        HISTORY_COLUMNS
    )
    assert plots.column("epoch") == [1.0, 2.0]
    assert plots.column("loss") == [1.0, 0.5]
    assert math.isnan(plots.column("val_loss")[1]) and math.isnan(plots.column("val_tumor_dice")[1])
    chart = plots.chartNode
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 4
    for column, series in plots.seriesNodes.items():
        assert series.IsA("vtkMRMLPlotSeriesNode")
        assert series.GetTableNode() is table
        assert (series.GetXColumnName(), series.GetYColumnName()) == ("epoch", column)
        assert chart.HasPlotSeriesNodeID(series.GetID())


def test_curves_reuse_their_nodes(headless):
    plots = TrainingPlots(headless.scene)
    plots.update(EPOCHS[:1])
    nodes = headless.scene.GetNumberOfNodes()
    ids = (plots.tableNode.GetID(), plots.chartNode.GetID())
    for count in (2, 1, 2, 0):
        plots.update(EPOCHS[:count])
        assert plots.rowCount == count
    assert headless.scene.GetNumberOfNodes() == nodes
    assert (plots.tableNode.GetID(), plots.chartNode.GetID()) == ids


def test_curves_come_back_after_the_scene_is_cleared(headless):
    plots = TrainingPlots(headless.scene)
    plots.update(EPOCHS)
    headless.scene.Clear(0)
    plots.update(EPOCHS)
    assert headless.scene.IsNodePresent(plots.tableNode) and plots.rowCount == 2
    assert headless.scene.IsNodePresent(plots.chartNode)
    assert headless.scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 4


def test_history_rows_count_epochs_from_one():
    rows = history_rows([{"epoch": 4, "loss": "0.5"}, {"loss": 1}])
    assert rows[0][:2] == [5.0, 0.5] and math.isnan(rows[1][0])


def test_history_csv_of_an_earlier_run(tmp_path):
    path = tmp_path / "history.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["epoch", "loss", "val_liver_dice", "improved"])
        writer.writeheader()
        writer.writerow({"epoch": 0, "loss": 0.9, "val_liver_dice": 0.5, "improved": True})
        writer.writerow({"epoch": 1, "loss": 0.8, "val_liver_dice": "", "improved": False})
    records = read_history_csv(path)
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[0]["loss"] == 0.9 and records[0]["event"] == "epoch"
    assert read_history_csv(tmp_path / "missing.csv") == []


# --- the logic without the trainer -------------------------------------------------------------
def test_logic_refuses_bad_options_and_starts_nothing(headless, tmp_path):
    logic = LiverXAITrainingLogic(scene=headless.scene, python=sys.executable)
    with pytest.raises(ValueError, match="Training data not found"):
        logic.startTraining(TrainingOptions(data=tmp_path / "none", out=tmp_path / "out"))
    assert logic.training is None and not logic.busy
    with pytest.raises(ValueError, match="Evaluation data not found"):
        logic.startEvaluation("best.pt", tmp_path / "none", tmp_path / "evaluation")
    assert logic.evaluation is None
    assert logic.bestCheckpoint(tmp_path) is None and logic.bestCheckpoint("") is None


def test_logic_refuses_to_start_without_the_trainers_packages(headless, tmp_path):
    # A fresh Slicer: torch, MONAI ... missing. Refused with their names before any process
    # starts, instead of a child that dies with "No module named torch".
    from LiverXAILib.slicer.dependencies import DependencyError, check

    empty = tmp_path / "site-packages"
    empty.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    logic = LiverXAITrainingLogic(
        scene=headless.scene,
        python=sys.executable,
        packageCheck=lambda: check(search_path=[str(empty)]),
    )
    with pytest.raises(DependencyError, match=r"Training cannot start\. .*torch>=2\.1"):
        logic.startTraining(TrainingOptions(data=data, out=tmp_path / "out"))
    with pytest.raises(DependencyError, match="The evaluation cannot start.*monai"):
        logic.startEvaluation("best.pt", data, tmp_path / "evaluation")
    assert logic.training is None and logic.evaluation is None and not logic.busy
    assert not (tmp_path / "out" / "train.log").exists()


def test_child_python_is_pythonslicer_in_slicer_else_this_interpreter(tmp_path, monkeypatch):
    from LiverXAILib.slicer import training_logic

    monkeypatch.setenv("PATH", str(tmp_path))  # no PythonSlicer on the PATH
    assert training_logic.slicer_python() == sys.executable
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    assert training_logic.slicer_python() == str(launcher)


def test_logic_reads_the_metrics_tables(tmp_path):
    (tmp_path / "metrics.md").write_text("| model | liver Dice |\n|---|---|\n| m | 0.95 |\n")
    (tmp_path / "metrics.csv").write_text("model,liver_dice\nm,0.95\n")
    assert "| m | 0.95 |" in LiverXAITrainingLogic.readMetricsTable(tmp_path)
    assert LiverXAITrainingLogic.readMetricsRows(tmp_path) == [{"model": "m", "liver_dice": "0.95"}]
    with pytest.raises(FileNotFoundError, match="metrics.md"):
        LiverXAITrainingLogic.readMetricsTable(tmp_path / "nothing")


# --- the real trainer ------------------------------------------------------------------------
@pytest.fixture
def lits_folder(tmp_path):
    """Two 'patients' in LiTS layout: the 30-slice TotalSegmentator crop and its liver label."""
    folder = tmp_path / "lits"
    folder.mkdir()
    for number in (1, 2):
        (folder / f"volume-{number}.nii.gz").symlink_to(require(SAMPLE_SMALL_CT))
        (folder / f"segmentation-{number}.nii.gz").symlink_to(require(SAMPLE_SMALL_LABEL))
    return folder


def _assert_ok(run: ChildProcess) -> None:
    assert run.returncode == 0, run.error_message


@pytest.mark.slow
def test_real_training_shows_curves_stops_and_resumes(headless, lits_folder, tmp_path):
    from LiverXAILib.models.catalog import read_catalog

    logic = LiverXAITrainingLogic(scene=headless.scene, python=sys.executable)
    out = tmp_path / "run"
    options = TrainingOptions(
        data=lits_folder,
        out=out,
        arch="unet",
        epochs=2,
        size=128,
        cache=tmp_path / "cache",
        device="cpu",
        register="pytest-training-module",
    )
    try:
        run = logic.startTraining(options)
        epoch = logic.waitFor(["epoch"], TRAINER_TIMEOUT)
        assert epoch is not None, run.error_message
        assert epoch["epoch"] == 0 and epoch["epochs"] == 2
        assert logic.plots.rowCount >= 1
        assert logic.plots.column("epoch")[0] == 1.0
        assert math.isfinite(logic.plots.column("loss")[0])
        assert [e["event"] for e in run.events][:2] == ["start", "split"]

        logic.stopTraining()
        assert (out / "STOP").exists() or not run.running
        end = logic.waitFor(["stopped", "done"], TRAINER_TIMEOUT)
        assert end is not None, run.error_message
        assert run.stop(timeout=TRAINER_TIMEOUT) == 0, run.error_message
        logic.poll()
        assert not logic.busy and not run.terminated
        assert (out / "last.pt").is_file() and (out / "history.csv").is_file()
        assert (out / "split.json").is_file()

        options.resume = True
        resumed = logic.startTraining(options)
        done = logic.waitFor(["done"], TRAINER_TIMEOUT)
        assert done is not None, resumed.error_message
        logic.waitFor([EXIT_EVENT], TRAINER_TIMEOUT)
        _assert_ok(resumed)
        assert Path(done["best"]) == out / "best.pt" and (out / "best.pt").is_file()
        assert logic.plots.column("epoch") == [1.0, 2.0]  # earlier epoch from history.csv
        assert done["registered"] == "pytest-training-module"
        assert "pytest-training-module" in [entry["name"] for entry in read_catalog()]
        assert logic.bestCheckpoint(out) == out / "best.pt"
    finally:
        logic.cleanup()


@pytest.mark.slow
def test_real_evaluation_writes_and_shows_the_metrics_table(headless, lits_folder, tmp_path):
    logic = LiverXAITrainingLogic(scene=headless.scene, python=sys.executable)
    out = tmp_path / "run"
    options = TrainingOptions(
        data=lits_folder, out=out, epochs=1, cache=tmp_path / "cache", device="cpu"
    )
    try:
        run = logic.startTraining(options)
        logic.waitFor([EXIT_EVENT], TRAINER_TIMEOUT)
        _assert_ok(run)
        evaluation = logic.startEvaluation(
            out / "best.pt", lits_folder, out / "evaluation", out / "split.json", "all", "cpu"
        )
        assert logic.evaluationRunning
        case = logic.waitFor(["case"], TRAINER_TIMEOUT)
        assert case is not None, evaluation.error_message
        done = logic.waitFor(["done"], TRAINER_TIMEOUT)
        assert done is not None, evaluation.error_message
        logic.waitFor([EXIT_EVENT], TRAINER_TIMEOUT)
        _assert_ok(evaluation)
        assert Path(done["metrics_md"]) == out / "evaluation" / "metrics.md"
        table = logic.readMetricsTable(out / "evaluation")
        assert table.count("|") > 4
        assert logic.readMetricsRows(out / "evaluation")
        assert (out / "evaluation" / "per_case.csv").is_file()
    finally:
        logic.cleanup()
