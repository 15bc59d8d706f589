"""Checkpoints carry metadata, load without running code, and fail with clear messages."""

from __future__ import annotations

import pickle

import pytest
import torch
from LiverXAILib.errors import CheckpointError
from LiverXAILib.models.catalog import read_catalog, resolve_model, sha256_file
from LiverXAILib.models.checkpoints import CheckpointMetadata, load_checkpoint, save_checkpoint
from LiverXAILib.models.networks import build_model
from LiverXAILib.segment.preprocessing import SliceInputSpec


def small_unet():
    return build_model("unet", in_channels=1, num_classes=3, features=(4, 8, 16, 32, 64))


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = small_unet()
    metadata = CheckpointMetadata(
        "unet",
        {"features": [4, 8, 16, 32, 64]},
        (64, 64),
        (-100.0, 200.0),
        1,
        training_data=["case.nii.gz"],
        metrics={"liver_dice": 0.9},
    )
    save_checkpoint(tmp_path / "m.pt", model, metadata)
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta.input_size == (64, 64) and meta.hu_window == (-100.0, 200.0)
    assert meta.training_data == ["case.nii.gz"] and meta.metrics == {"liver_dice": 0.9}
    assert meta.software["torch"] == torch.__version__
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert not loaded.training


def test_a_slice_step_round_trips_and_old_checkpoints_stack_by_index(tmp_path):
    model = build_model("unet", in_channels=3, num_classes=3, features=(4, 8, 16, 32, 64))
    metadata = CheckpointMetadata("unet", {"in_channels": 3, "features": [4, 8, 16, 32, 64]})
    metadata.input_size, metadata.num_slices, metadata.slice_step_mm = (64, 64), 3, 2.5
    save_checkpoint(tmp_path / "step.pt", model, metadata)
    _, meta = load_checkpoint(tmp_path / "step.pt")
    assert meta.slice_step_mm == 2.5 and meta.num_slices == 3
    assert meta.input_spec() == SliceInputSpec(meta.hu_window, (64, 64), 3, 2.5)

    payload = torch.load(tmp_path / "step.pt", weights_only=True)
    del payload["metadata"]["slice_step_mm"]  # as written before the option existed
    torch.save(payload, tmp_path / "old.pt")
    _, old = load_checkpoint(tmp_path / "old.pt")
    assert old.slice_step_mm is None and old.input_spec().slice_step_mm is None


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_corrupt_file_is_reported(tmp_path):
    path = tmp_path / "broken.pt"
    save_checkpoint(
        path, small_unet(), CheckpointMetadata("unet", {"features": [4, 8, 16, 32, 64]})
    )
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken.pt is not a readable"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickle_with_code_is_refused_not_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as stream:
        torch.save(
            {"format": "liverxai-checkpoint-1", "x": Exploit()}, stream, pickle_module=pickle
        )
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_checkpoint_for_another_architecture_or_configuration(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(
        path, small_unet(), CheckpointMetadata("unet", {"features": [4, 8, 16, 32, 64]})
    )
    with pytest.raises(CheckpointError, match="holds a 'unet' network, not 'transunet'"):
        load_checkpoint(path, expected_architecture="transunet")
    payload = torch.load(path, weights_only=True)
    payload["metadata"]["architecture_kwargs"] = {}  # claims the full-size U-Net
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_bundled_catalog_models_pass_their_checksums_and_stay_small():
    entries = read_catalog()
    assert entries, "the catalog lists no model"
    for entry in entries:
        path = resolve_model(entry["name"])
        assert sha256_file(path) == entry["sha256"]
        assert path.stat().st_size <= 60_000_000, f"{entry['name']}: weights over 60 MB"
        model, metadata = load_checkpoint(path)
        assert metadata.architecture == entry["architecture"]


def test_tampered_catalog_model_is_rejected(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"not the real weights")
    catalog = tmp_path / "models.json"
    catalog.write_text('{"models": [{"name": "x", "file": "m.pt", "sha256": "00"}]}')
    with pytest.raises(CheckpointError, match="SHA-256"):
        resolve_model("x", catalog)
    with pytest.raises(CheckpointError, match="Unknown model 'y'"):
        resolve_model("y", catalog)


def test_register_model_lists_verifies_and_replaces(tmp_path):
    from LiverXAILib.models.catalog import register_model

    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    first.write_bytes(b"weights one")
    second.write_bytes(b"weights two")
    folder = tmp_path / "models"
    entry = register_model(first, "mine", {"architecture": "unet"}, models_dir=folder)
    assert resolve_model("mine", folder / "models.json").read_bytes() == b"weights one"
    assert entry["sha256"] == sha256_file(first)
    register_model(second, "mine", {"architecture": "unet"}, models_dir=folder)
    assert [e["name"] for e in read_catalog(folder / "models.json")] == ["mine"]
    assert resolve_model("mine", folder / "models.json").read_bytes() == b"weights two"
    assert len(list(folder.glob("*.pt"))) == 1  # the replaced version is gone
    with pytest.raises(ValueError, match="taken by a bundled model"):
        register_model(first, "unet-demo", {}, models_dir=folder)
    with pytest.raises(ValueError, match="use letters"):
        register_model(first, "../evil", {}, models_dir=folder)


def test_every_bundled_model_segments_and_explains_a_slice():
    import numpy as np
    import torch
    from LiverXAILib.models.checkpoints import load_checkpoint
    from LiverXAILib.segment.inference import SliceInferenceEngine
    from LiverXAILib.segment.uncertainty import UncertaintySpec

    volume = np.full((3, 64, 64), -1000, dtype=np.int16)
    volume[:, 16:48, 16:48] = 60  # a soft-tissue block
    for entry in read_catalog():
        model, metadata = load_checkpoint(resolve_model(entry["name"]))
        assert metadata.architecture == entry["architecture"]
        engine = SliceInferenceEngine(
            model, metadata.input_spec(), torch.device("cpu"), batch_size=3
        )
        outputs = engine.run(
            volume,
            explain_classes=(1, 2),
            uncertainty=UncertaintySpec(),
            slice_spacing_mm=2.5,  # models with a slice step need the volume's spacing
        )
        assert outputs.uncertainty is not None and np.isfinite(outputs.uncertainty).all()
        assert outputs.labels.shape == volume.shape
        assert all(np.isfinite(m).all() for m in outputs.heatmaps.values())


def test_a_measured_cam_layer_travels_with_the_weights(tmp_path):
    from LiverXAILib.explain.methods import default_cam_layer
    from LiverXAILib.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

    model, metadata = load_checkpoint(resolve_model("unet-demo"))
    assert metadata.cam_layer is None and default_cam_layer(model) == "decoder.2"
    metadata.cam_layer = "decoder.3"
    save_checkpoint(tmp_path / "measured.pt", model, metadata)
    loaded, _ = load_checkpoint(tmp_path / "measured.pt")
    assert default_cam_layer(loaded) == "decoder.3"
    metadata.cam_layer = "decoder.9"
    save_checkpoint(tmp_path / "wrong.pt", model, metadata)
    with pytest.raises(CheckpointError, match="'cam_layer' is 'decoder.9': the network has no"):
        load_checkpoint(tmp_path / "wrong.pt")
    metadata.cam_layer = ""
    assert any("'cam_layer'" in problem for problem in metadata.problems())
