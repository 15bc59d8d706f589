"""A model's tumour settings (``tumor_bias``, ``min_tumor_ml`` in its metadata) act where the
labels are made: the engine's arg-max and the pipeline's clean-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from LiverXAILib.constants import LIVER, TUMOR
from LiverXAILib.models.checkpoints import CheckpointMetadata
from LiverXAILib.segment.inference import SliceInferenceEngine
from LiverXAILib.segment.pipeline import run_pipeline
from LiverXAILib.segment.preprocessing import SliceInputSpec
from test_explain import RegionNet

SPEC = SliceInputSpec((0.0, 400.0), (64, 64))


def organ_volume() -> np.ndarray:
    volume = np.zeros((12, 64, 64), dtype=np.float32)  # (K, J, I)
    volume[2:9, :32, 32:] = 300.0
    volume[4:7, 8:16, 40:48] = 400.0  # brighter inside: the liver logit is higher there
    return volume


def region_net() -> RegionNet:
    network = RegionNet().eval()
    with torch.no_grad():
        network.head.bias[TUMOR] = 0.0  # tumour is second best inside the organ
    return network


@pytest.mark.parametrize("bias", [0.0, 1.0, 2.5, -1.0])
def test_the_bias_shifts_the_tumour_log_odds_before_the_arg_max(bias):
    volume = organ_volume()
    engine = SliceInferenceEngine(region_net(), SPEC, torch.device("cpu"), 4, tumor_bias=bias)
    labels = engine.run(volume).labels
    with torch.inference_mode():
        logits = region_net()(SPEC.batch(volume, list(range(12)))).double()
    shifted = torch.log_softmax(logits, dim=1)
    shifted[:, TUMOR] += bias
    np.testing.assert_array_equal(labels, shifted.argmax(dim=1).numpy())
    if bias >= 2.5:
        assert (labels == TUMOR).any() and (labels == LIVER).any()


def test_the_pipeline_turns_tumours_under_the_minimum_into_liver():
    volume, ijk_to_ras = organ_volume(), np.diag([1.0, 1.0, 2.5, 1.0])

    def segment(min_tumor_ml: float):
        engine = SliceInferenceEngine(
            region_net(), SPEC, torch.device("cpu"), 4, tumor_bias=2.5, min_tumor_ml=min_tumor_ml
        )
        return run_pipeline(volume, ijk_to_ras, engine, (LIVER, TUMOR), ("gradcam",))

    plain, strict = segment(0.0), segment(1000.0)
    assert plain.statistics.tumor_count >= 1 and plain.statistics.tumor_ml > 0
    assert strict.statistics.tumor_count == 0 and not (strict.labels == TUMOR).any()
    organ = plain.statistics.liver_ml  # the organ, tumour included, keeps its volume
    assert strict.statistics.liver_ml == pytest.approx(organ)
    assert not strict.heatmaps["gradcam"][TUMOR].any()  # nothing left to explain


@pytest.mark.parametrize(
    "change, field",
    [
        ({"tumor_bias": math.nan}, "tumor_bias"),
        ({"tumor_bias": 11.0}, "tumor_bias"),
        ({"tumor_bias": "1"}, "tumor_bias"),
        ({"min_tumor_ml": -0.5}, "min_tumor_ml"),
        ({"min_tumor_ml": math.inf}, "min_tumor_ml"),
    ],
)
def test_metadata_refuses_settings_that_cannot_work(change, field):
    problems = CheckpointMetadata(architecture="unet", **change).problems()
    assert len(problems) == 1 and f"field {field!r}" in problems[0]


def test_old_checkpoints_without_the_settings_read_as_no_change():
    metadata = CheckpointMetadata.from_dict({"architecture": "unet"})
    assert metadata.tumor_bias == 0.0 and metadata.min_tumor_ml == 0.0 and not metadata.problems()
