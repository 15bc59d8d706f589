"""BatchNorm folded into convolutions: same network function, names kept, Grad-CAM unchanged."""

from __future__ import annotations

import pytest
import torch
from LiverXAILib.explain.methods import attribute
from LiverXAILib.models.batch_norm_folding import fold_batch_norm
from LiverXAILib.models.catalog import resolve_model
from LiverXAILib.models.checkpoints import load_checkpoint
from LiverXAILib.models.networks import build_model
from test_networks import ROUND_TRIP_KWARGS
from torch import nn


def with_trained_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(shape, generator=generator) * 0.2)
    return model.eval()


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_KWARGS))
def test_every_architecture_computes_the_same_function(name):
    torch.manual_seed(0)
    model = with_trained_statistics(build_model(name, **ROUND_TRIP_KWARGS[name]))
    folded = fold_batch_norm(model)
    size = ROUND_TRIP_KWARGS[name].get("image_size", 64)
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        expected, actual = model(x), folded(x)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    names = {n for n, _ in model.named_modules()}
    assert {n for n, _ in folded.named_modules()} == names  # every module keeps its name
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is intact


def test_the_demo_unet_has_no_batch_norm_left_and_the_same_outputs_and_gradcam():
    model, _ = load_checkpoint(resolve_model("unet-demo"))
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    target = torch.tensor([1, 1])
    expected = attribute(model, x, target, "gradcam")
    actual = attribute(folded, x, target, "gradcam")
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-4)


def test_a_kept_convolution_is_not_folded():
    model = with_trained_statistics(build_model("unet", features=[8, 16, 32, 64, 128]))
    folded = fold_batch_norm(model, keep=["stem.0"])
    assert isinstance(folded.stem[1], nn.BatchNorm2d)  # stem.0 output stays the raw convolution
    assert isinstance(folded.stem[4], nn.Identity)  # the next pair is folded
    assert folded.stem[0].bias is None


def test_the_folded_copy_is_frozen_and_the_original_is_not():
    from LiverXAILib.models.batch_norm_folding import fold_batch_norm
    from LiverXAILib.models.networks import build_model

    model = build_model("unet", in_channels=1, num_classes=3)
    folded = fold_batch_norm(model)
    assert not any(p.requires_grad for p in folded.parameters())
    assert all(p.requires_grad for p in model.parameters())
