"""CPU batches are capped by the size of the network's largest feature map."""

from __future__ import annotations

import torch
from LiverXAILib.models.networks import build_model
from LiverXAILib.segment.inference import SliceInferenceEngine
from LiverXAILib.segment.preprocessing import SliceInputSpec
from LiverXAILib.segment.slices_per_pass import cpu_batch_limit, largest_feature_map_bytes
from torch import nn


class Widening(nn.Module):
    """1 -> 6 channels, then a concatenation to 12 inside a child module's input."""

    def __init__(self) -> None:
        super().__init__()
        self.widen = nn.Conv2d(1, 6, 3, padding=1)
        self.head = nn.Conv2d(12, 3, 1)

    def forward(self, x):
        features = self.widen(x)
        return self.head(torch.cat([features, features], dim=1))


def test_the_largest_tensor_a_module_takes_or_gives_is_measured_and_hooks_are_removed():
    model = Widening().eval()
    spec = SliceInputSpec((0.0, 1.0), (32, 16))
    # the head's input: 12 channels x 32 x 16 float32 for one slice
    assert largest_feature_map_bytes(model, spec) == 12 * 32 * 16 * 4
    assert cpu_batch_limit(model, spec, budget_bytes=12 * 32 * 16 * 4 * 5 + 1) == 5
    assert cpu_batch_limit(model, spec, budget_bytes=1) == 1  # never below one slice
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_the_engine_caps_cpu_batches_of_the_unet_at_128_to_8_slices():
    model = build_model("unet", in_channels=1, num_classes=3).eval()
    spec = SliceInputSpec((-100.0, 200.0), (128, 128))
    # the last decoder stage concatenates 16 + 16 channels at 128 x 128: 2 MiB per slice
    assert largest_feature_map_bytes(model, spec) == 32 * 128 * 128 * 4
    assert SliceInferenceEngine(model, spec, torch.device("cpu"), 16).batch_size == 8
    assert SliceInferenceEngine(model, spec, torch.device("cpu"), 3).batch_size == 3
