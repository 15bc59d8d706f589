"""The Training module's options, the train and evaluate commands, and the progress text."""

from __future__ import annotations

from pathlib import Path

import pytest
from LiverXAILib.training.options import (
    AUGMENTATIONS,
    FALLBACK_ARCHITECTURES,
    TrainingOptions,
    available_architectures,
    build_evaluate_command,
    build_train_command,
    default_model_name,
)
from LiverXAILib.training.progress import EXIT_EVENT, Progress, format_duration


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
    assert "--keep-going" not in command
    options.keep_going = True
    assert build_train_command(options, python="py")[-2:] == ["--resume", "--keep-going"]
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
    progress.update({"event": "excluded", "case": "lits-9", "reason": "label is (1, 2, 3) voxels"})
    assert progress.message == "Left out case lits-9: label is (1, 2, 3) voxels."
    progress.update({"event": "split", "train": [1, 2], "validation": [4], "test": []})
    assert progress.message == (
        "Cases: 2 training, 1 validation, 0 test. Left out (label does not fit its CT): lits-9."
    )
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
