"""The training command: data discovery, split, cache, checkpoints, stop, resume, DDP, catalog."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLE_SMALL_CT
from LiverXAILib.catalog import read_catalog, resolve_model
from LiverXAILib.checkpoints import load_checkpoint, read_checkpoint
from test_data import lits_folder

pytestmark = pytest.mark.slow

ENVIRONMENT = dict(os.environ, PYTHONPATH=str(ROOT / "LiverXAI"), OMP_NUM_THREADS="2")


def command(data, out, cache, epochs, *extra, launcher=(sys.executable, "-m")):
    return [
        *launcher,
        "LiverXAILib",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--epochs",
        str(epochs),
        "--keep-empty",
        "0",
        *extra,
    ]


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def run(arguments, expect=0) -> list[dict]:
    completed = subprocess.run(
        arguments, capture_output=True, text=True, env=ENVIRONMENT, timeout=600
    )
    assert completed.returncode == expect, completed.stderr[-3000:]
    return records(completed.stdout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lits_folder(tmp_path_factory.mktemp("lits"), count=2)


def test_train_splits_caches_writes_and_registers(data, tmp_path):
    cache = tmp_path / "cache"
    events = run(command(data, tmp_path / "run", cache, 1, "--register", "my-unet"))
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["start", "split"] and kinds[-1] == "done"
    split = next(e for e in events if e["event"] == "split")
    assert len(split["train"]) == 1 and len(split["validation"]) == 1  # two patients
    assert [e["cached"] for e in events if e["event"] == "cache"] == [False, False]
    epoch = next(e for e in events if e["event"] == "epoch")
    for key in ("loss", "val_loss", "val_liver_dice", "val_tumor_dice", "eta_seconds", "lr"):
        assert isinstance(epoch[key], float)
    assert epoch["slices_per_second"] > 0
    for name in ("best.pt", "last.pt", "history.csv", "curves.png", "split.json"):
        assert (tmp_path / "run" / name).is_file(), name

    model, metadata = load_checkpoint(tmp_path / "run" / "best.pt")
    assert metadata.architecture == "unet" and metadata.input_size == (128, 128)
    assert metadata.metrics["selection"] == "validation"
    assert "liver" in metadata.metrics["validation"]["per_class"]
    assert metadata.metrics["recipe"]["loss"] == "dicece"

    # Registered: the Segment & Explain model list now offers it, checksum verified.
    assert events[-1]["registered"] == "my-unet"
    assert "my-unet" in [entry["name"] for entry in read_catalog()]
    assert resolve_model("my-unet").is_file()

    # A second run with the same settings reuses the cached slices.
    events = run(command(data, tmp_path / "again", cache, 1))
    assert [e["cached"] for e in events if e["event"] == "cache"] == [True, True]

    # The finished run is not overwritten by accident.
    completed = subprocess.run(
        command(data, tmp_path / "run", cache, 1),
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
    )
    assert completed.returncode == 2 and "already holds a training run" in completed.stderr


def test_stop_file_ends_cleanly_and_resume_continues(data, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        command(data, out, tmp_path / "cache", 50, "--patience", "50"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENVIRONMENT,
    )
    seen = []
    for line in process.stdout:
        if line.startswith("{"):
            seen.append(json.loads(line))
            if seen[-1]["event"] == "epoch":
                (out / "STOP").touch()
    assert process.wait(timeout=300) == 0, process.stderr.read()
    stopped = seen[-1]
    assert stopped["event"] == "stopped"
    assert not (out / "STOP").exists()
    finished = read_checkpoint(out / "last.pt")["training_state"]["epoch"]
    assert finished == stopped["epoch"] - 1  # the interrupted epoch is not saved half-done

    changed = subprocess.run(
        command(data, out, tmp_path / "cache", finished + 2, "--resume", "--loss", "ce"),
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
    )
    assert changed.returncode == 2 and "loss: dicece → ce" in changed.stderr

    events = run(command(data, out, tmp_path / "cache", finished + 2, "--resume"))
    assert {"event": "resume", "epoch": finished + 1} in events
    with open(out / "history.csv") as stream:
        epochs = [int(row["epoch"]) for row in csv.DictReader(stream)]
    assert epochs == list(range(finished + 2))


def test_two_gloo_processes_with_torchrun(data, tmp_path):
    launcher = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
    )
    events = run(command(data, tmp_path / "ddp", tmp_path / "cache", 1, launcher=launcher))
    assert events[0]["world_size"] == 2
    assert sum(e["event"] == "epoch" for e in events) == 1  # rank 0 alone reports
    assert events[-1]["event"] == "done"
    model, _ = load_checkpoint(tmp_path / "ddp" / "best.pt")
    assert not any(key.startswith("module.") for key in model.state_dict())


def test_bad_data_gives_a_json_error(tmp_path):
    completed = subprocess.run(
        command(tmp_path, tmp_path / "out", tmp_path / "cache", 1),
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
    )
    assert completed.returncode == 2
    error = records(completed.stdout)[-1]
    assert error["event"] == "error" and "No cases" in error["message"]


def test_explicit_cases_still_train(tmp_path):
    from test_data import SMALL_LIVER

    arguments = command(SAMPLE_SMALL_CT, tmp_path / "run", tmp_path / "cache", 1)
    position = arguments.index("--data")
    arguments[position : position + 2] = ["--case", str(SAMPLE_SMALL_CT), str(SMALL_LIVER)]
    events = run(arguments)
    data_event = next(e for e in events if e["event"] == "data")
    assert data_event["selection"] == "training"  # no validation patient: said so
    _, metadata = load_checkpoint(tmp_path / "run" / "best.pt")
    assert metadata.training_data == [f"{SAMPLE_SMALL_CT.parent.name}/{SAMPLE_SMALL_CT.name}"]


def test_selection_score_ignores_absent_tumour():
    from LiverXAILib.validation import selection_score

    metrics = {"per_class": {"liver": {"dice": 0.8}, "tumor": {"dice": 0.0}}}
    assert selection_score(metrics, tumor_present=True) == pytest.approx(0.4)
    assert selection_score(metrics, tumor_present=False) == pytest.approx(0.8)
