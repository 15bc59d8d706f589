"""The training command: options, data discovery, split, cache, checkpoints, stop, resume, DDP,
catalog. The option checks and ``--help`` are fast; the runs of the real trainer are ``slow``."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE_SMALL_CT
from LiverXAILib.cli.main import main
from LiverXAILib.models.catalog import read_catalog, resolve_model
from LiverXAILib.models.checkpoints import load_checkpoint, read_checkpoint
from LiverXAILib.training.options import option_problem
from test_data import SMALL_LIVER, lits_folder

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    from LiverXAILib.training.validation import selection_score

    metrics = {"per_class": {"liver": {"dice": 0.8}, "tumor": {"dice": 0.0}}}
    assert selection_score(metrics, tumor_present=True) == pytest.approx(0.4)
    assert selection_score(metrics, tumor_present=False) == pytest.approx(0.8)


# --- options: refused at once, with the message of the one check ---------------------------

BAD_OPTIONS = [  # option, text, (rule, value) of the expected message
    ("--epochs", "0", ("epochs", 0)),
    ("--epochs", "-3", ("epochs", -3)),
    ("--batch-size", "0", ("batch_size", 0)),
    ("--batch-size", "-4", ("batch_size", -4)),
    ("--lr", "0", ("lr", 0.0)),
    ("--lr", "nan", ("lr", math.nan)),
    ("--lr", "inf", ("lr", math.inf)),
    ("--patience", "0", ("patience", 0)),
    ("--keep-empty", "1.5", ("keep_empty", 1.5)),
    ("--validation-fraction", "1", ("validation_fraction", 1.0)),
    ("--test-fraction", "-0.5", ("test_fraction", -0.5)),
    ("--workers", "-1", ("workers", -1)),
    ("--class-weights", "0,0,0", ("class_weights", (0.0, 0.0, 0.0))),
    ("--class-weights", "1,nan,3", ("class_weights", (1.0, math.nan, 3.0))),
    ("--class-weights", "1,-1,3", ("class_weights", (1.0, -1.0, 3.0))),
    ("--class-weights", "1,1", ("class_weights", (1.0, 1.0))),
    ("--size", "512", ("size", 512)),
    ("--slices", "2", ("slices", 2)),
    ("--slice-step-mm", "0", ("slice_step_mm", 0.0)),
    ("--slice-step-mm", "-2.5", ("slice_step_mm", -2.5)),
    ("--slice-step-mm", "inf", ("slice_step_mm", math.inf)),
    ("--tumour-share", "0", ("tumor_share", 0.0)),
    ("--tumour-share", "1", ("tumor_share", 1.0)),
    ("--loss", "focal", ("loss", "focal")),
    ("--schedule", "linear", ("schedule", "linear")),
    ("--arch", "segformer", ("arch", "segformer")),
    ("--device", "tpu", ("device", "tpu")),
    ("--augment", "rotate,mixup", ("augment", ("rotate", "mixup"))),
]


def parse_error(arguments: list[str], capsys) -> str:
    """The last stderr line of ``python -m LiverXAILib ARGUMENTS``, which must exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no JSON event: nothing started
    return captured.err.strip().splitlines()[-1]


@pytest.mark.parametrize(("option", "text", "rule"), BAD_OPTIONS, ids=lambda v: str(v))
def test_bad_train_options_exit_2_naming_the_option(option, text, rule, tmp_path, capsys):
    arguments = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "out"), option, text]
    error = parse_error(arguments, capsys)
    assert error.endswith(f"error: argument {option}: {option_problem(*rule)}")
    assert not (tmp_path / "out").exists()


def test_train_options_that_are_not_numbers(tmp_path, capsys):
    base = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert parse_error([*base, "--epochs", "ten"], capsys).endswith(
        "argument --epochs: expected an integer, got 'ten'"
    )
    assert parse_error([*base, "--class-weights", "1,x,3"], capsys).endswith(
        "argument --class-weights: expected numbers separated by commas, got '1,x,3'"
    )


def test_evaluate_refuses_a_negative_number_of_figure_slices(tmp_path, capsys):
    arguments = ["evaluate", "--model", "unet-demo", "--out", str(tmp_path), "--data", "d"]
    error = parse_error([*arguments, "--figure-slices", "-1"], capsys)
    assert error.endswith("argument --figure-slices: -1 is too small: give at least 0")


def test_the_training_module_commands_parse_as_given(tmp_path):
    from LiverXAILib.cli.main import build_parser
    from LiverXAILib.training.options import TrainingOptions, build_train_command

    options = TrainingOptions(
        data=tmp_path, out=tmp_path / "out", arch="vunet", size=256, slices=3, lr=2.5e-4,
        batch_size=4, patience=3, augment=("flip",), keep_empty=0.5, schedule="cosine",
    )  # fmt: skip
    args = build_parser().parse_args(build_train_command(options, python="py")[3:])
    assert (args.arch, args.size, args.slices, args.lr) == ("vunet", 256, 3, 2.5e-4)
    assert (args.batch_size, args.patience, args.augment) == (4, 3, ("flip",))
    assert (args.keep_empty, args.schedule, args.class_weights) == (0.5, "cosine", (1.0, 1.0, 3.0))
    assert args.cache is None and args.epochs == 50


@pytest.mark.parametrize(
    "change",
    [
        {"epochs": 0},
        {"epochs": -2},
        {"batch_size": 0},
        {"batch_size": -4},
        {"learning_rate": math.nan},
        {"patience": 0},
        {"class_weights": (0.0, 0.0, 0.0)},
        {"workers": -1},
        {"hu_window": (100.0, 100.0)},
        {"input_size": (0, 0)},
        {"num_slices": 2},
        {"slice_step_mm": 3.0},  # with one slice per input
        {"num_slices": 3, "slice_step_mm": 0.0},
        {"architecture": "segformer"},
        {"validation_fraction": 0.6, "test_fraction": 0.5},
    ],
    ids=str,
)
def test_the_trainer_refuses_settings_that_cannot_work_before_anything(change, tmp_path):
    """Once, ``--epochs 0`` ended with a "done" event naming a best.pt that did not exist."""
    from LiverXAILib.training.cases import Case
    from LiverXAILib.training.trainer import TrainConfig, train

    config = TrainConfig(
        out_dir=tmp_path / "out",
        train_cases=[Case(SAMPLE_SMALL_CT, SMALL_LIVER)],
        cache_dir=tmp_path / "cache",
        **{"epochs": 1, **change},
    )
    events = []
    with pytest.raises(ValueError) as caught:
        train(config, log=events.append)
    assert events == [] and not (tmp_path / "out").exists()
    assert "\n" not in str(caught.value)
    if "epochs" in change:
        assert str(caught.value) == option_problem("epochs", change["epochs"])


def test_register_refuses_a_diverged_checkpoint(tmp_path, monkeypatch):
    import torch
    from LiverXAILib.errors import CheckpointError
    from LiverXAILib.models.checkpoints import CheckpointMetadata, save_checkpoint
    from LiverXAILib.models.networks import build_model
    from LiverXAILib.training.trainer import _register

    monkeypatch.setenv("LIVERXAI_MODELS_DIR", str(tmp_path / "models"))
    network = build_model("unet", in_channels=1, num_classes=3, features=(4, 8, 16, 32, 64))
    with torch.no_grad():
        list(network.parameters())[-1].fill_(math.nan)  # as after a diverged epoch
    metadata = CheckpointMetadata("unet", {"features": [4, 8, 16, 32, 64]}, (64, 64))
    save_checkpoint(tmp_path / "best.pt", network, metadata)
    with pytest.raises(CheckpointError, match=r"best\.pt: weight tensor '.*' holds NaN"):
        _register(tmp_path / "best.pt", "diverged")
    assert "diverged" not in [entry["name"] for entry in read_catalog()]


# --- --help: at once, without torch, and naming the real cache folder ----------------------

HEAVY = {"torch", "numpy", "monai", "SimpleITK", "nibabel", "scipy", "slicer", "vtk", "matplotlib"}


@pytest.mark.parametrize(
    "arguments", [["--help"], ["train", "--help"], ["evaluate", "--help"], ["models", "--help"]]
)
def test_help_imports_nothing_heavy(arguments):
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "LiverXAILib", *arguments],
        capture_output=True,
        text=True,
        env=ENVIRONMENT,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in completed.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & HEAVY


def test_train_help_names_the_cache_folder_the_trainer_uses(monkeypatch, capsys):
    from LiverXAILib.training import options as training_options

    expected = {"LIVERXAI_CACHE": "/x/cache", "XDG_CACHE_HOME": "/x/xdg/liverxai/slices"}
    for key, folder in expected.items():
        monkeypatch.delenv("LIVERXAI_CACHE", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.setenv(key, folder.split("/liverxai")[0])
        assert training_options.default_cache_dir() == Path(folder)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "$XDG_CACHE_HOME/liverxai/slices" in text and "~/.cache/liverxai/slices" in text
    assert str(training_options.default_cache_dir()) in text.replace("- ", "-")


def test_light_option_lists_match_the_registries():
    """``training_options`` lists the choices without torch; they must stay the trainer's."""
    from LiverXAILib.models.networks import available_models
    from LiverXAILib.training import augmentation, losses
    from LiverXAILib.training import options as training_options
    from LiverXAILib.training import trainer as training

    assert training_options.ARCHITECTURES == tuple(available_models())
    assert sorted(training_options.LOSSES) == sorted(losses.LOSSES)
    assert training_options.AUGMENTATIONS == augmentation.AUGMENTATIONS
    assert training_options.DEFAULT_AUGMENTATIONS == augmentation.DEFAULT_AUGMENTATIONS
    assert training.SCHEDULES == training_options.SCHEDULES
    for text in ("rotate,zoom", " Flip , flip,NOISE", "none", "", "intensity,"):
        parsed = training_options.parse_augmentations(text)
        assert parsed == augmentation.parse_augmentations(text)
    for text in ("mixup", "rotate,cutout"):
        with pytest.raises(ValueError):
            augmentation.parse_augmentations(text)
        with pytest.raises(ValueError):
            training_options.parse_augmentations(text)
