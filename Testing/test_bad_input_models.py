"""The bad-input suite, part two: models, training options and a real DICOM folder, run as a
user runs them (see test_bad_input.py for the rules and docs/bad-input.md for the kinds)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import SimpleITK as sitk
from cli_checks import FAST, digest, error_lines, nothing_written, run
from conftest import ROOT, SAMPLE_SMALL_CT, SHARED_DATA, require

# Models, training options and DICOM folders, run as a user runs them ----------------------
BUNDLED_MODEL = ROOT / "LiverXAI" / "Resources" / "Models" / "unet_demo.pt"


def _tampered_model(tmp: Path, name: str, change: Callable[[dict], None]) -> Path:
    import torch

    payload = torch.load(BUNDLED_MODEL, map_location="cpu", weights_only=True)
    change(payload)
    path = tmp / name
    torch.save(payload, path)
    return path


def _flat_window(payload: dict) -> None:
    payload["metadata"]["hu_window"] = [100, 100]


def _no_slices(payload: dict) -> None:
    payload["metadata"]["num_slices"] = 0


def _nan_weights(payload: dict) -> None:
    first = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][first][...] = float("nan")


BAD_MODELS = {
    "HU window of zero width": (_flat_window, "hu_window"),
    "zero input slices": (_no_slices, "num_slices"),
    "NaN weights": (_nan_weights, "NaN"),
}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_bad_checkpoints_are_refused_by_segment_and_import(kind, tmp_path, capsys):
    change, word = BAD_MODELS[kind]
    model = _tampered_model(tmp_path, "bad.pt", change)
    out = tmp_path / "out"
    argv = ("segment", str(SAMPLE_SMALL_CT), "--out", str(out), "--model", str(model), *FAST)
    status, stderr = run(capsys, *argv)
    assert status == 2
    lines = error_lines(stderr)
    assert len(lines) == 1 and "bad.pt" in lines[0] and word in lines[0], stderr
    assert nothing_written(out)
    status, stderr = run(capsys, "models", "import", str(model))
    assert status == 2 and word in stderr


def test_a_broken_user_catalog_leaves_the_bundled_model_usable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIVERXAI_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "models.json").write_text('{"models": [{"name": 3}]}')
    out = tmp_path / "out"
    status, stderr = run(capsys, "segment", str(SAMPLE_SMALL_CT), "--out", str(out), *FAST)
    assert status == 0, stderr
    assert (out / "example_ct_sm_report.json").is_file()


@pytest.mark.parametrize("option", [("--epochs", "0"), ("--epochs", "-3"), ("--batch-size", "0")])
def test_training_options_out_of_range_are_refused(option, tmp_path, capsys):
    case = ("--case", str(SAMPLE_SMALL_CT), str(SAMPLE_SMALL_CT))
    status, stderr = run(capsys, "train", *case, "--out", str(tmp_path / "run"), *option)
    assert status == 2 and option[0] in stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_dicom_folder_with_a_localizer_and_a_second_series(tmp_path, capsys):
    """The real HCC series (58 axial slices and a coronal localizer) beside an anonymised
    IRCADb series without a Frame of Reference: the CT series is chosen by the rule, named in
    the report, read at 5 mm without the localizer, and its DICOM SEG is written."""
    import shutil

    folder = tmp_path / "study"  # both series side by side in one folder, as archives do
    folder.mkdir()
    for series in ("hcctace_2144_series", "ircadb01_p01_20slices"):
        for file in require(SHARED_DATA / "dicom" / series).iterdir():
            shutil.copyfile(file, folder / f"{series}-{file.name}")
    before = digest(folder)
    out = tmp_path / "out"
    argv = ("segment", str(folder), "--out", str(out), "--export", "dicom-seg", *FAST)
    status, stderr = run(capsys, *argv)
    assert status == 0, stderr
    report = json.loads((out / "study_report.json").read_text())
    assert report["source"]["kind"] == "dicom" and report["source"]["files"] == 58
    assert any("LOCALIZER" in text or "localizer" in text for text in report["source"]["leftOut"])
    assert len(report["source"]["otherSeries"]) == 1
    assert report["source"]["seriesInstanceUID"] in (out / "study_report.html").read_text()
    label = sitk.ReadImage(str(out / "study_label.nii.gz"))
    assert label.GetSize()[2] == 58 and abs(label.GetSpacing()[2] - 5.0) < 0.01
    assert (out / "study_seg.dcm").is_file()
    assert digest(folder) == before
