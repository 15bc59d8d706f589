"""Grad-CAM puts its mass where the class is decided, and depends on the model."""

from __future__ import annotations

import numpy as np
import torch
from LiverXAILib.explain import GradCAM, mass_inside, normalize_volume, slices_to_review
from LiverXAILib.inference import SliceInferenceEngine
from LiverXAILib.preprocessing import SliceInputSpec
from torch import nn


class RegionNet(nn.Module):
    """Sees the input only through non-negative local features: where the input is zero,
    nothing can make the network predict class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU())
        self.down = nn.AvgPool2d(4)  # the Grad-CAM target, at 1/4 resolution
        self.head = nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.features[0].weight.fill_(0.1)
            self.head.weight.zero_()
            self.head.weight[1] = 1.0
            self.head.bias.copy_(torch.tensor([0.5, 0.0, -5.0]))

    def forward(self, x):
        pooled = self.down(self.features(x))  # (B, 4, H/4, W/4)
        return nn.functional.interpolate(self.head(pooled), size=x.shape[-2:], mode="nearest")


def bright_top_right_quadrant(batch: int = 3) -> torch.Tensor:
    inputs = torch.zeros(batch, 1, 64, 64)
    inputs[..., :32, 32:] = 1.0 + torch.rand(batch, 1, 32, 32)
    return inputs


def test_heatmap_mass_lies_in_the_only_region_that_can_decide_the_class():
    model = RegionNet().eval()
    logits, maps = GradCAM(model, model.down)(bright_top_right_quadrant(), [1], (64, 64))
    predicted = logits.argmax(1)
    assert predicted[:, :32, 32:].float().mean() > 0.9  # the net predicts class 1 there
    assert predicted[:, 32:, :32].float().max() == 0
    heat = maps[1].numpy()
    region = np.zeros((3, 64, 64), dtype=bool)
    region[:, :36, 28:] = True  # the quadrant plus the 4-pixel rim of one 1/4-resolution cell
    assert heat.sum() > 0
    assert mass_inside(heat, region) > 0.98


def test_class_absent_from_prediction_has_an_empty_map():
    model = RegionNet().eval()
    _, maps = GradCAM(model, model.down)(torch.rand(2, 1, 64, 64), [2], (64, 64))
    assert float(maps[2].abs().sum()) == 0.0


def test_randomised_weights_change_the_heatmap():
    model = RegionNet().eval()
    inputs = bright_top_right_quadrant()
    _, trained = GradCAM(model, model.down)(inputs, [1], (64, 64))
    torch.manual_seed(3)
    with torch.no_grad():
        model.features[0].weight.normal_()
        model.head.weight.normal_()
    _, randomised = GradCAM(model, model.down)(inputs, [1], (64, 64))
    a, b = trained[1].numpy(), randomised[1].numpy()
    assert np.abs(a - b).sum() > 0.3 * np.abs(a).sum()


def test_engine_heatmaps_match_a_direct_grad_cam_call_and_backs_off_on_oom():
    model = RegionNet().eval()
    volume = (np.random.default_rng(0).random((5, 64, 64)) * 400).astype(np.float32)
    spec = SliceInputSpec((0.0, 400.0), (64, 64))

    class OutOfMemoryAbove2(nn.Module):
        """Fault injection: the wrapped net fails like a full GPU on batches over 2 slices."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if x.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.inner(x)

    wrapped = OutOfMemoryAbove2(model)
    engine = SliceInferenceEngine(wrapped, spec, torch.device("cpu"), model.down, batch_size=8)
    outputs = engine.run(volume, [1])
    assert outputs.batch_size == 2
    _, direct = GradCAM(model, model.down)(spec.batch(volume, list(range(5))), [1], (64, 64))
    np.testing.assert_allclose(outputs.heatmaps[1], direct[1].numpy(), rtol=1e-4, atol=1e-5)


def test_volume_normalisation_keeps_slices_comparable():
    heat = np.zeros((2, 4, 4), dtype=np.float32)
    heat[0] = 2.0
    heat[1] = 1.0
    normalize_volume(heat)
    assert heat.max() == 1.0 and heat[1].max() == 0.5


def test_review_lists_slices_whose_attention_is_outside_the_prediction():
    region = np.zeros((3, 20, 20), dtype=bool)
    region[:, 5:15, 5:15] = True
    heat = np.zeros((3, 20, 20), dtype=np.float32)
    heat[0, 5:15, 5:15] = 1.0  # agrees
    heat[1, :3, :3] = 1.0  # looks elsewhere
    heat[2, 5:15, 5:15] = 1.0
    heat[2, :, :8] = 1.0  # mostly elsewhere
    listed = slices_to_review(heat, region)
    assert [index for index, _ in listed] == [1, 2]
    assert listed[0][1] == 0.0
