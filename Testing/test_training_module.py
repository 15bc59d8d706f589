"""The Training module's logic without Qt: commands, child process, events, curves, stop.

Three kinds of test:

- The process plumbing (reader thread, non-blocking poll, STOP file, terminate/kill
  escalation, error reporting, environment) is tested with a small real Python program written
  by the test, ``PLUMBING_CHILD``. It speaks the trainer's JSON-line protocol but trains nothing:
  it tests the runner, it is not a stand-in for the trainer.
- Commands, options, progress text and the curves (on a headless slicer-core scene) are tested
  directly.
- ``slow`` tests run the real trainer and evaluation (``python -m LiverXAILib train|evaluate``)
  through ``LiverXAITrainingLogic`` on a small LiTS-layout folder.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE_SMALL_CT, SHARED_DATA, require
from LiverXAILib.training_plots import HISTORY_COLUMNS, TrainingPlots, history_rows
from LiverXAILib.training_process import (
    AUGMENTATIONS,
    EXIT_EVENT,
    FALLBACK_ARCHITECTURES,
    ChildProcess,
    LiverXAITrainingLogic,
    Progress,
    TrainingOptions,
    available_architectures,
    build_evaluate_command,
    build_train_command,
    child_environment,
    default_model_name,
    format_duration,
    parse_event_line,
    read_history_csv,
)

SAMPLE_SMALL_LABEL = SHARED_DATA / "totalseg_example" / "example_ct_sm_liver.nii.gz"
TIMEOUT = 60  # plumbing tests: generous, they take well under a second each
TRAINER_TIMEOUT = 900  # real trainer on a 2-core CPU

# A real child process speaking the trainer's protocol, for testing the runner only.
PLUMBING_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time

    out, mode, epochs, steps, delay = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:6])
    epochs, steps = int(epochs), int(steps)
    stop_file = os.path.join(out, "STOP")

    def emit(**event):
        print(json.dumps(event), flush=True)

    print("a line that is not JSON", flush=True)
    print("{not json either", flush=True)
    print(json.dumps([1, 2]), flush=True)  # JSON, but not an event
    emit(event="start", arch="plumbing", epochs=epochs, out=out, device="cpu", world_size=1)
    if mode == "environment":
        import LiverXAILib
        emit(event="environment", library=LiverXAILib.__file__,
             unbuffered=os.environ.get("PYTHONUNBUFFERED"), cwd=os.getcwd())
        sys.exit(0)
    if mode == "error":
        print("Traceback (most recent call last): ...", file=sys.stderr, flush=True)
        emit(event="error", message="no cases found in the data folder")
        sys.exit(2)
    if mode == "crash":
        raise RuntimeError("boom in the child")
    if mode == "stderr_flood":  # 4 MB: far more than a pipe buffer
        for _ in range(4000):
            sys.stderr.write("w" * 1023 + "\\n")
        sys.stderr.flush()
    if mode == "ignore_stop":
        if hasattr(signal, "SIGTERM") and os.name != "nt":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            emit(event="step", epoch=0, step=1, steps=1, loss=1.0, eta_seconds=None)
            time.sleep(0.05)
    for epoch in range(epochs):
        for step in range(1, steps + 1):
            if os.path.exists(stop_file):
                emit(event="stopped", epoch=epoch)
                sys.exit(0)
            time.sleep(delay)
            emit(event="step", epoch=epoch, step=step, steps=steps, loss=1.0 / (epoch + 1),
                 eta_seconds=delay * (steps - step))
        emit(event="epoch", epoch=epoch, epochs=epochs, loss=1.0 / (epoch + 1),
             val_loss=1.2 / (epoch + 1), val_liver_dice=0.5 + 0.1 * epoch,
             val_tumor_dice=None, score=0.5, best_score=0.5, improved=epoch == 0,
             lr=0.001, seconds=delay * steps, slices_per_second=100.0, eta_seconds=0.0)
    emit(event="done", best=os.path.join(out, "best.pt"), last=os.path.join(out, "last.pt"),
         best_score=0.5, registered=None)
    """
)


@pytest.fixture
def plumbing(tmp_path):
    """Start ``PLUMBING_CHILD`` in one of its modes; every process is stopped afterwards."""
    script = tmp_path / "plumbing_child.py"
    script.write_text(PLUMBING_CHILD, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    started: list[ChildProcess] = []

    def start(mode="normal", epochs=2, steps=3, delay=0.01, **options) -> ChildProcess:
        command = [sys.executable, str(script), str(out), mode, str(epochs), str(steps), str(delay)]
        options.setdefault("stop_file", out / "STOP")
        options.setdefault("log_path", out / "child.log")
        run = ChildProcess(command, **options)
        started.append(run)
        return run

    start.out = out
    yield start
    for run in started:
        if run.running:
            run.stop(timeout=1, kill_after=1)


def drain(run: ChildProcess, timeout: float = TIMEOUT) -> list[dict]:
    """Poll until the exit event; all events in order."""
    assert run.wait_for([EXIT_EVENT], timeout) is not None or run.finished, run.stderr_tail
    return run.events


# --- the process plumbing --------------------------------------------------------------------
def test_reader_turns_json_lines_into_events_and_keeps_the_rest(plumbing):
    run = plumbing(epochs=2, steps=3)
    events = drain(run)
    names = [e["event"] for e in events]
    assert names[0] == "start"
    assert names[-2:] == ["done", EXIT_EVENT]
    assert names.count("step") == 6 and names.count("epoch") == 2
    assert all(e["source"] == "train" for e in events)
    assert [e["epoch"] for e in run.history] == [0, 1]
    assert "a line that is not JSON" in run.output_tail
    assert "{not json either" in run.output_tail
    assert "[1, 2]" in run.output_tail
    assert run.returncode == 0 and run.finished and not run.running
    assert run.error_message is None
    assert run.progress.phase == "finished" and run.progress.fraction == 1.0
    assert run.last_event("epoch")["epoch"] == 1
    log = (plumbing.out / "child.log").read_text(encoding="utf-8")
    assert '"event": "done"' in log and "a line that is not JSON" in log


def test_poll_never_blocks(plumbing):
    run = plumbing(epochs=1000, steps=10, delay=0.05)
    began = time.monotonic()
    for _ in range(20):
        run.poll()
    assert time.monotonic() - began < 0.5
    assert run.running
    assert run.stop(timeout=TIMEOUT) == 0


def test_stop_creates_the_stop_file_and_the_child_ends_cleanly(plumbing):
    run = plumbing(epochs=1000, steps=5, delay=0.01)
    assert run.wait_for(["epoch"], TIMEOUT) is not None
    began = time.monotonic()
    assert run.stop(timeout=TIMEOUT) == 0
    assert time.monotonic() - began < 10
    assert (plumbing.out / "STOP").exists()
    assert not run.terminated
    names = [e["event"] for e in drain(run)]
    assert names[-2:] == ["stopped", EXIT_EVENT]
    assert run.progress.phase == "stopped"
    assert run.error_message is None


def test_request_stop_returns_at_once_and_poll_sees_the_end(plumbing):
    run = plumbing(epochs=1000, steps=5, delay=0.01)
    assert run.wait_for(["step"], TIMEOUT) is not None
    began = time.monotonic()
    run.request_stop()
    assert time.monotonic() - began < 0.1
    assert run.stop_requested
    assert run.wait_for(["stopped"], TIMEOUT) is not None
    drain(run)
    assert run.returncode == 0 and not run.terminated


def test_stop_terminates_a_child_that_ignores_the_stop_file(plumbing):
    run = plumbing(mode="ignore_stop")
    assert run.wait_for(["step"], TIMEOUT) is not None
    began = time.monotonic()
    code = run.stop(timeout=0.5, kill_after=0.5)
    assert time.monotonic() - began < 10
    assert code != 0 and run.terminated
    drain(run)
    assert "did not stop in time" in run.error_message


def test_poll_escalates_a_requested_stop_after_the_grace_time(plumbing):
    run = plumbing(mode="ignore_stop", stop_grace_seconds=0.3)
    assert run.wait_for(["step"], TIMEOUT) is not None
    run.request_stop()
    deadline = time.monotonic() + 20
    while not run.finished and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.05)
    assert run.finished and run.terminated and run.returncode != 0


def test_error_event_and_exit_code_two(plumbing):
    run = plumbing(mode="error")
    drain(run)
    assert run.returncode == 2
    assert run.error_message == "no cases found in the data folder"
    assert run.progress.phase == "failed"
    assert "Traceback" in run.stderr_tail


def test_a_crash_is_reported_with_the_end_of_stderr(plumbing):
    run = plumbing(mode="crash")
    drain(run)
    assert run.returncode == 1
    assert "RuntimeError: boom in the child" in run.error_message
    assert run.progress.phase == "failed"


def test_a_flood_on_stderr_does_not_block_the_child(plumbing):
    run = plumbing(mode="stderr_flood", epochs=1, steps=1)
    assert run.wait_for(["done"], TIMEOUT) is not None
    drain(run)
    assert run.returncode == 0
    assert len(run.stderr_tail.splitlines()) == 200  # only the tail is kept


def test_the_child_imports_the_library_unbuffered_from_anywhere(plumbing, tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = plumbing(mode="environment", env=environment, cwd=tmp_path)
    event = run.wait_for(["environment"], TIMEOUT)
    assert event is not None, run.stderr_tail
    assert Path(event["library"]).resolve().parent == ROOT / "LiverXAI" / "LiverXAILib"
    assert event["unbuffered"] == "1"
    assert Path(event["cwd"]).resolve() == tmp_path.resolve()


def test_child_environment_puts_the_library_first():
    environment = child_environment({"PYTHONPATH": os.pathsep.join(["/a", "/b"]), "X": "1"})
    assert environment["PYTHONPATH"].split(os.pathsep) == [str(ROOT / "LiverXAI"), "/a", "/b"]
    assert environment["PYTHONUNBUFFERED"] == "1" and environment["X"] == "1"


def test_a_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="Could not start"):
        ChildProcess([str(tmp_path / "no-such-python"), "-c", "pass"])


def test_stopping_a_finished_child_is_harmless(plumbing):
    run = plumbing(epochs=1, steps=1)
    drain(run)
    run.request_stop()
    assert run.stop(timeout=1) == 0
    assert not run.stop_requested and not run.terminated


def test_logic_polls_a_process_and_updates_the_curves(plumbing, headless):
    logic = LiverXAITrainingLogic(scene=headless.scene, python=sys.executable)
    logic.training = plumbing(epochs=3, steps=2)
    assert logic.busy and logic.trainingRunning
    assert logic.waitFor(["done"], TIMEOUT) is not None
    assert logic.plots.rowCount == 3
    assert logic.plots.column("epoch") == [1.0, 2.0, 3.0]
    assert logic.waitFor([EXIT_EVENT], TIMEOUT) is not None or not logic.busy
    assert not logic.busy and logic.currentRun is logic.training


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
    from LiverXAILib.augmentation import AUGMENTATIONS as TRAINER_AUGMENTATIONS
    from LiverXAILib.augmentation import DEFAULT_AUGMENTATIONS
    from LiverXAILib.networks import available_models

    assert AUGMENTATIONS == TRAINER_AUGMENTATIONS
    assert tuple(TrainingOptions.augment) == DEFAULT_AUGMENTATIONS  # the class default
    assert available_architectures() == available_models()
    assert set(available_models()) <= set(FALLBACK_ARCHITECTURES)


def test_parse_event_line():
    assert parse_event_line('{"event": "epoch", "epoch": 0}\n') == {"event": "epoch", "epoch": 0}
    assert math.isnan(parse_event_line('  {"event": "x", "v": NaN}')["v"])
    for line in ("", "plain text", "{broken", "[1, 2]", '{"no_event": 1}', '{"event": 3}'):
        assert parse_event_line(line) is None, line


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
    from LiverXAILib.catalog import read_catalog

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
