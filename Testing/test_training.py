"""The training entry point trains, writes its files, resumes, and its result loads."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLE_SMALL_CT, SHARED_DATA, require
from LiverXAILib.checkpoints import load_checkpoint, read_checkpoint

pytestmark = pytest.mark.slow

LIVER_LABEL = SHARED_DATA / "totalseg_example" / "example_ct_sm_liver.nii.gz"


def train(out, epochs, *extra):
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "LiverXAI"))
    command = [
        sys.executable,
        "-m",
        "LiverXAILib",
        "train",
        "--case",
        str(require(SAMPLE_SMALL_CT)),
        str(require(LIVER_LABEL)),
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        *extra,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=600
    )
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


def test_train_writes_checkpoints_and_history_then_resumes(tmp_path):
    records = train(tmp_path, 1)
    assert records[0]["event"] == "data" and records[0]["train_slices"] > 20
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [0]
    for name in ("best.pt", "last.pt", "history.csv"):
        assert (tmp_path / name).is_file()

    records = train(tmp_path, 2, "--resume")
    assert {"event": "resume", "epoch": 1} in records
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1]
    with open(tmp_path / "history.csv") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["0", "1"]
    assert read_checkpoint(tmp_path / "last.pt")["training_state"]["epoch"] == 1

    model, metadata = load_checkpoint(tmp_path / "best.pt")
    assert metadata.architecture == "unet" and metadata.input_size == (128, 128)
    assert metadata.training_data == [SAMPLE_SMALL_CT.name]
    assert "liver" in metadata.metrics["validation"]["per_class"]
