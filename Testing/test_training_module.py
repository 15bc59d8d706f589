"""The Training module's logic without Qt: the curves, the logic, the real trainer through it.

Two kinds of test:

- The curves (on a headless slicer-core scene) and the logic without the trainer are tested
  directly.
- ``slow`` tests run the real trainer and evaluation (``python -m LiverXAILib train|evaluate``)
  through ``LiverXAITrainingLogic`` on a small LiTS-layout folder.

Options, commands and progress text are tested in ``test_training_options.py``, the
child-process runner itself in ``test_training_process.py``.
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
from LiverXAILib.training.options import TrainingOptions
from LiverXAILib.training.process import ChildProcess
from LiverXAILib.training.progress import EXIT_EVENT

SAMPLE_SMALL_LABEL = SHARED_DATA / "totalseg_example" / "example_ct_sm_liver.nii.gz"
TRAINER_TIMEOUT = 900  # real trainer on a 2-core CPU


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
