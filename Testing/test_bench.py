"""The benchmark's naive baseline does the same work as our pipeline, so the ratio is fair."""

from __future__ import annotations

import sys

import numpy as np
import torch
from conftest import ROOT, SAMPLE_SMALL_CT
from LiverXAILib.explain.methods import cam_layer
from LiverXAILib.io.volumes import read_volume
from LiverXAILib.models.catalog import resolve_model
from LiverXAILib.models.checkpoints import load_checkpoint
from LiverXAILib.segment.inference import SliceInferenceEngine
from LiverXAILib.segment.pipeline import run_pipeline

sys.path.insert(0, str(ROOT / "bench"))

from measure import PeakMemory  # noqa: E402
from naive_baseline import naive_segment_and_explain  # noqa: E402
from run_bench import tiled  # noqa: E402


def test_naive_baseline_gives_our_labels_and_our_grad_cam():
    array, matrix = read_volume(SAMPLE_SMALL_CT)
    model, metadata = load_checkpoint(resolve_model("unet-demo"))
    spec = metadata.input_spec()
    ours = run_pipeline(
        array, matrix, SliceInferenceEngine(model, spec, torch.device("cpu"), 16), (1, 2)
    )
    labels, heatmaps = naive_segment_and_explain(array, matrix, model, spec, cam_layer(model))
    assert labels.shape == array.shape
    np.testing.assert_array_equal(ours.orientation.apply(labels), ours.labels)
    # grad-cam scales each slice to [0, 1] and resizes to the CT; ours keeps the network's
    # grid and scales per volume: compare slice by slice (correlation ignores the scaling)
    naive_liver = ours.orientation.apply(heatmaps[1])
    ours_liver = ours.heatmaps["gradcam"][1]
    rows, columns = (
        (
            (np.arange(ours_liver.shape[a]) + 0.5) * naive_liver.shape[a] / ours_liver.shape[a]
        ).astype(int)
        for a in (1, 2)
    )
    sampled = naive_liver[:, rows][:, :, columns]
    explained = [i for i in range(len(sampled)) if ours_liver[i].std() > 0 and sampled[i].std() > 0]
    assert len(explained) > 5
    correlations = [np.corrcoef(sampled[i].ravel(), ours_liver[i].ravel())[0, 1] for i in explained]
    assert np.median(correlations) > 0.95, correlations


def test_tiled_volume_and_peak_memory():
    volume = np.arange(3)[:, None, None] * np.ones((1, 2, 2))
    assert tiled(volume, 8)[:, 0, 0].tolist() == [0, 1, 2, 2, 1, 0, 0, 1]
    with PeakMemory() as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MB
        block += 1
    assert memory.peak > 64
