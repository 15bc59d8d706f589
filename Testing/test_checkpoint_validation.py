"""What a checkpoint claims is checked before use; a broken user catalog hides no bundled model.

Each bad value here once got through: a zero-width HU window failed later with a division by
zero, a size or slice count of zero with raw torch errors, NaN weights segmented nothing
("Liver: 0.0 mL") and exited 0, and an unreadable ``models.json`` in the user's folder
blocked even the bundled models.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import SAMPLE_SMALL_CT, require
from LiverXAILib.cli.main import main
from LiverXAILib.errors import CheckpointError
from LiverXAILib.models.catalog import (
    CatalogError,
    read_catalog,
    register_model,
    resolve_model,
    user_catalog_problem,
)
from LiverXAILib.models.checkpoints import CheckpointMetadata, load_checkpoint, save_checkpoint
from LiverXAILib.models.download import import_model
from LiverXAILib.models.networks import build_model

FEATURES = [4, 8, 16, 32, 64]


@pytest.fixture(scope="module")
def good_payload(tmp_path_factory) -> dict:
    """A valid checkpoint's dictionary (a small U-Net, 64x64) to spoil one field at a time."""
    network = build_model("unet", in_channels=1, num_classes=3, features=FEATURES)
    path = tmp_path_factory.mktemp("good") / "good.pt"
    save_checkpoint(path, network, CheckpointMetadata("unet", {"features": FEATURES}, (64, 64)))
    return torch.load(path, weights_only=True)


def spoiled(payload: dict, folder: Path, name: str, weights: dict | None = None, **metadata):
    """A copy of ``payload`` with some metadata fields (None: removed) and weights replaced."""
    changed = {**payload["metadata"], **metadata}
    changed = {key: value for key, value in changed.items() if value is not None}
    state_dict = {**payload["state_dict"], **(weights or {})}
    path = folder / name
    torch.save({**payload, "metadata": changed, "state_dict": state_dict}, path)
    return path


BAD_METADATA = {
    "zero-width window": ({"hu_window": [100, 100]}, "hu_window"),
    "reversed window": ({"hu_window": [300, -200]}, "hu_window"),
    "NaN window": ({"hu_window": [math.nan, 300]}, "hu_window"),
    "window of text": ({"hu_window": ["low", "high"]}, "hu_window"),
    "window of one value": ({"hu_window": [100]}, "hu_window"),
    "zero size": ({"input_size": [0, 0]}, "input_size"),
    "negative size": ({"input_size": [-64, 64]}, "input_size"),
    "huge size": ({"input_size": [4096, 4096]}, "input_size"),
    "size as a number": ({"input_size": 64}, "input_size"),
    "size the network cannot take": ({"input_size": [100, 100]}, "input_size"),
    "zero slices": ({"num_slices": 0}, "num_slices"),
    "even slices": ({"num_slices": 2}, "num_slices"),
    "fractional slices": ({"num_slices": 1.5}, "num_slices"),
    "slices the network cannot take": ({"num_slices": 3}, "num_slices"),
    "zero slice step": ({"slice_step_mm": 0}, "slice_step_mm"),
    "negative slice step": ({"slice_step_mm": -2.5}, "slice_step_mm"),
    "NaN slice step": ({"slice_step_mm": math.nan}, "slice_step_mm"),
    "infinite slice step": ({"slice_step_mm": math.inf}, "slice_step_mm"),
    "slice step of text": ({"slice_step_mm": "3 mm"}, "slice_step_mm"),
    "other classes": ({"class_names": ["background", "kidney"]}, "class_names"),
    "unknown architecture": ({"architecture": "segformer"}, "architecture"),
    "no architecture": ({"architecture": None}, "architecture"),
    "kwargs not an object": ({"architecture_kwargs": [1, 2]}, "architecture_kwargs"),
    "metrics not an object": ({"metrics": [0.9]}, "metrics"),
}


@pytest.mark.parametrize("case", BAD_METADATA, ids=list(BAD_METADATA))
def test_bad_metadata_is_refused_naming_file_and_field(case, good_payload, tmp_path):
    change, field = BAD_METADATA[case]
    path = spoiled(good_payload, tmp_path, "spoilt.pt", **change)
    with pytest.raises(CheckpointError, match=rf"^spoilt\.pt: .*'{field}'") as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_naming_the_tensor(value, good_payload, tmp_path):
    key = [k for k in good_payload["state_dict"] if k.endswith("weight")][3]  # not the first
    weights = good_payload["state_dict"][key].clone()
    weights.view(-1)[-1] = value
    path = spoiled(good_payload, tmp_path, "diverged.pt", {key: weights})
    with pytest.raises(CheckpointError, match=rf"^diverged\.pt: weight tensor '{key}' holds NaN"):
        load_checkpoint(path)


def test_weights_that_are_not_tensors_are_refused(good_payload, tmp_path):
    key = next(iter(good_payload["state_dict"]))
    path = spoiled(good_payload, tmp_path, "odd.pt", {key: [0.0, 1.0]})
    with pytest.raises(CheckpointError, match=rf"odd\.pt: weight '{key}' is not a tensor"):
        load_checkpoint(path)


def test_valid_checkpoint_still_loads(good_payload, tmp_path):
    path = spoiled(good_payload, tmp_path, "fine.pt", num_slices=1, hu_window=[-100.0, 250.0])
    model, metadata = load_checkpoint(path)
    assert metadata.hu_window == (-100.0, 250.0) and metadata.problems() == []


def test_invalid_metadata_is_never_saved(tmp_path):
    network = build_model("unet", in_channels=1, num_classes=3, features=FEATURES)
    bad = CheckpointMetadata("unet", {"features": FEATURES}, (64, 64), hu_window=(5.0, 5.0))
    with pytest.raises(CheckpointError, match="hu_window"):
        save_checkpoint(tmp_path / "bad.pt", network, bad)
    assert not (tmp_path / "bad.pt").exists()


def test_models_import_refuses_bad_files_with_one_line(models_dir, good_payload, tmp_path, capsys):
    window = spoiled(good_payload, tmp_path, "window.pt", hu_window=[100, 100])
    key = next(iter(good_payload["state_dict"]))
    nan = good_payload["state_dict"][key].clone().fill_(math.nan)
    diverged = spoiled(good_payload, tmp_path, "diverged.pt", {key: nan})
    for path, what in ((window, "'hu_window'"), (diverged, f"'{key}'")):
        assert main(["models", "import", str(path)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"error: {path.name}: ") and what in error
        assert len(error.splitlines()) == 1
        with pytest.raises(CheckpointError, match=path.name):
            import_model(path)
    assert not (models_dir / "models.json").exists()


def test_segment_refuses_a_diverged_model_instead_of_finding_no_liver(
    good_payload, tmp_path, capsys
):
    key = next(iter(good_payload["state_dict"]))
    nan = good_payload["state_dict"][key].clone().fill_(math.nan)
    diverged = spoiled(good_payload, tmp_path, "diverged.pt", {key: nan})
    arguments = ["segment", str(require(SAMPLE_SMALL_CT)), "--out", str(tmp_path / "out")]
    assert main([*arguments, "--model", str(diverged), "--explain", "none"]) == 2
    assert "diverged.pt: weight tensor" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*_label.nii.gz"))


# --- A user catalog that cannot be read ---------------------------------------------------

BROKEN_CATALOGS = {
    "not JSON": '{"models": [',
    "no models list": "[]",
    "bad entry": json.dumps({"models": [{"name": "mine", "file": "../m.pt", "sha256": "ab"}]}),
}


@pytest.mark.parametrize("case", BROKEN_CATALOGS, ids=list(BROKEN_CATALOGS))
def test_broken_user_catalog_keeps_the_bundled_models(case, models_dir, caplog, capsys):
    models_dir.mkdir()
    catalog = models_dir / "models.json"
    catalog.write_text(BROKEN_CATALOGS[case])
    with caplog.at_level(logging.WARNING, logger="LiverXAILib.models.catalog"):
        entries = read_catalog()
    assert {"unet-demo", "vunet-dev"} <= {entry["name"] for entry in entries}
    assert all(entry["source"] == "bundled" for entry in entries)
    assert resolve_model("unet-demo").is_file()

    problem = user_catalog_problem()
    assert problem is not None and str(catalog) in problem and "Fix that file" in problem
    assert "\n" not in problem
    assert [record.getMessage() for record in caplog.records] in ([problem], [])  # logged once

    with pytest.raises(CatalogError, match=rf"Model 'mine' is not available: {catalog}"):
        resolve_model("mine")
    before = catalog.read_text()
    with pytest.raises(CatalogError, match="Cannot add model 'other'.*Fix that file"):
        register_model(resolve_model("unet-demo"), "other", {"architecture": "unet"})
    assert catalog.read_text() == before  # never overwritten

    assert main(["models", "list"]) == 0
    captured = capsys.readouterr()
    assert "unet-demo" in captured.out and "vunet-dev" in captured.out
    assert captured.err.splitlines() == [f"warning: {problem}"]


def test_readable_user_catalog_has_no_problem(models_dir):
    assert user_catalog_problem() is None
    models_dir.mkdir()
    (models_dir / "models.json").write_text('{"models": []}')
    assert user_catalog_problem() is None
