"""The Training module's child-process runner (``training_process``) with a real child.

The process plumbing (reader thread, non-blocking poll, STOP file, terminate/kill escalation,
error reporting, environment) is tested with a small real Python program written by the test,
``PLUMBING_CHILD``. It speaks the trainer's JSON-line protocol but trains nothing: it tests the
runner, it is not a stand-in for the trainer. Options, commands and progress text are tested in
``test_training_options.py``, the curves and the real trainer in ``test_training_module.py``.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT
from LiverXAILib.slicer.training_logic import LiverXAITrainingLogic
from LiverXAILib.training.process import ChildProcess, child_environment, parse_event_line
from LiverXAILib.training.progress import EXIT_EVENT

TIMEOUT = 60  # plumbing tests: generous, they take well under a second each

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


def test_parse_event_line():
    assert parse_event_line('{"event": "epoch", "epoch": 0}\n') == {"event": "epoch", "epoch": 0}
    assert math.isnan(parse_event_line('  {"event": "x", "v": NaN}')["v"])
    for line in ("", "plain text", "{broken", "[1, 2]", '{"no_event": 1}', '{"event": 3}'):
        assert parse_event_line(line) is None, line


LOGIC_AND_COMMAND = [  # TrainingOptions field, value, the train command's option and text
    ("epochs", 0, "--epochs", "0"),
    ("epochs", -5, "--epochs", "-5"),
    ("batch_size", 0, "--batch-size", "0"),
    ("batch_size", -4, "--batch-size", "-4"),
    ("lr", 0.0, "--lr", "0.0"),
    ("lr", math.inf, "--lr", "inf"),
    ("patience", 0, "--patience", "0"),
    ("keep_empty", 1.5, "--keep-empty", "1.5"),
    ("size", 512, "--size", "512"),
    ("slices", 2, "--slices", "2"),
    ("loss", "focal", "--loss", "focal"),
    ("schedule", "linear", "--schedule", "linear"),
    ("arch", "segformer", "--arch", "segformer"),
    ("device", "tpu", "--device", "tpu"),
    ("augment", ("rotate", "mixup"), "--augment", "rotate,mixup"),
]


@pytest.mark.parametrize(("field", "value", "option", "text"), LOGIC_AND_COMMAND, ids=str)
def test_logic_refuses_what_the_command_refuses_with_the_same_message(
    field, value, option, text, headless, tmp_path, capsys
):
    """The Training module and ``python -m LiverXAILib train`` share one check per option."""
    from LiverXAILib.cli.main import main
    from LiverXAILib.training.options import TrainingOptions

    out = tmp_path / "out"
    logic = LiverXAITrainingLogic(scene=headless.scene, python=sys.executable)
    with pytest.raises(ValueError) as refused:
        logic.startTraining(TrainingOptions(data=tmp_path, out=out, **{field: value}))
    assert logic.training is None and not logic.busy and not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(tmp_path), "--out", str(out), option, text])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(f"error: argument {option}: {refused.value}")
