"""The U-Net's ``norm="instance"`` option: per-slice statistics, saved and run like any model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from LiverXAILib.constants import LIVER, TUMOR
from LiverXAILib.models.batch_norm_folding import fold_batch_norm
from LiverXAILib.models.checkpoints import CheckpointMetadata, load_checkpoint, save_checkpoint
from LiverXAILib.models.networks import build_model, count_parameters
from LiverXAILib.segment.inference import SliceInferenceEngine
from torch import nn

SMALL = (4, 8, 16, 32, 64)


def instance_unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", features=SMALL, norm="instance")


def test_every_normalisation_is_an_instance_norm_with_the_batch_norms_parameters() -> None:
    model = instance_unet()
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.affine and not m.track_running_stats for m in norms)
    batch = build_model("unet", features=SMALL)
    assert count_parameters(model) == count_parameters(batch)
    # same module names, so the Grad-CAM layers and the state dict keys of weights stay alike
    assert {k for k in model.state_dict() if "running" not in k and "tracked" not in k} == {
        k for k in batch.state_dict() if "running" not in k and "tracked" not in k
    }


@pytest.mark.parametrize("training", [True, False])
def test_a_slice_gives_the_same_logits_whatever_else_is_in_its_batch(training: bool) -> None:
    model = instance_unet().train(training)
    torch.manual_seed(1)
    slice_, others = torch.rand(1, 1, 64, 64), torch.rand(3, 1, 64, 64) * 5
    alone = model(slice_)
    in_a_batch = model(torch.cat([slice_, others]))[:1]
    assert torch.allclose(alone, in_a_batch, atol=1e-5)


def test_a_global_contrast_scale_of_the_slice_is_normalised_away() -> None:
    model = instance_unet().eval()
    batch_model = build_model("unet", features=SMALL).eval()
    torch.manual_seed(2)
    slice_ = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        change = (model(slice_ * 1.5) - model(slice_)).abs().max().item()
        batch_change = (batch_model(slice_ * 1.5) - batch_model(slice_)).abs().max().item()
    # bias-free first convolution + per-slice statistics: a scale of the input cancels
    assert change < 1e-3 < batch_change


def test_unknown_norm_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="group.*batch, instance"):
        build_model("unet", norm="group")


def test_checkpoint_round_trip_and_inference_engine(tmp_path) -> None:
    model = instance_unet().eval()
    metadata = CheckpointMetadata("unet", {"features": list(SMALL), "norm": "instance"})
    metadata.input_size = (64, 64)
    save_checkpoint(tmp_path / "instance.pt", model, metadata)
    loaded, meta = load_checkpoint(tmp_path / "instance.pt")
    assert meta.architecture_kwargs["norm"] == "instance"
    slices = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(slices), loaded(slices))
        # nothing to fold: the folded copy computes the same
        assert torch.allclose(fold_batch_norm(loaded)(slices), loaded(slices), atol=1e-6)

    volume = np.random.default_rng(0).integers(-200, 300, size=(5, 64, 64)).astype(np.int16)
    engine = SliceInferenceEngine(loaded, meta.input_spec(), torch.device("cpu"), batch_size=2)
    outputs = engine.run(volume, [LIVER, TUMOR], methods=("gradcam",))
    assert outputs.labels.shape == volume.shape and outputs.labels.max() <= 2
    for heatmap in outputs.heatmaps.values():
        assert heatmap.shape == volume.shape and np.isfinite(heatmap).all()
