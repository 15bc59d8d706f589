"""Attribution methods put their mass where the class is decided, batch per-sample targets,
select layers, and plug into the engine with uncertainty."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from LiverXAILib.explain.cam import LayerCAM
from LiverXAILib.explain.integrated_gradients import IntegratedGradientsExplainer, estimate_seconds
from LiverXAILib.explain.methods import (
    METHODS,
    NORMALIZATION_DESCRIPTIONS,
    attribute,
    check_methods,
    layer_choices,
    normalize_volume,
)
from LiverXAILib.segment.inference import SliceInferenceEngine
from LiverXAILib.segment.preprocessing import SliceInputSpec
from LiverXAILib.segment.uncertainty import (
    UncertaintySpec,
    augmentation_pairs,
    check_uncertainty,
    normalized_entropy,
)
from torch import nn


class RegionNet(nn.Module):
    """Sees the input only through non-negative local features: where the input is zero,
    nothing can make the network predict class 1."""

    gradcam_layer = "down"

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


def mass_inside(heat: np.ndarray, region: np.ndarray) -> float:
    return float(heat[region].sum() / heat.sum())


QUADRANT_WITH_RIM = np.zeros((3, 64, 64), dtype=bool)
QUADRANT_WITH_RIM[:, :36, 28:] = True  # the quadrant plus the rim of one 1/4-resolution cell


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "integrated-gradients"])
def test_every_method_puts_its_mass_where_the_class_can_be_decided(method: str):
    model = RegionNet().eval()
    inputs = bright_top_right_quadrant()
    predicted = model(inputs).argmax(1)
    assert predicted[:, :32, 32:].float().mean() > 0.9  # the net predicts class 1 there
    assert predicted[:, 32:, :32].float().max() == 0
    heat = attribute(model, inputs, 1, method, hu_window=(0.0, 1.0)).numpy()
    assert heat.shape == (3, 64, 64) and heat.min() >= 0 and heat.sum() > 0
    assert mass_inside(heat, QUADRANT_WITH_RIM) > 0.98


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "integrated-gradients"])
def test_class_absent_from_prediction_has_an_empty_map(method: str):
    model = RegionNet().eval()
    heat = attribute(model, torch.rand(2, 1, 64, 64), 2, method, hu_window=(0.0, 1.0))
    assert float(heat.abs().sum()) == 0.0


def test_per_sample_targets_give_each_slice_its_own_class_map():
    model = RegionNet().eval()
    inputs = bright_top_right_quadrant(2)
    both = attribute(model, inputs, [1, 2], "gradcam")
    only_liver = attribute(model, inputs, 1, "gradcam")
    assert torch.allclose(both[0], only_liver[0])
    assert float(both[1].sum()) == 0.0  # class 2 is predicted nowhere


def test_maps_come_back_at_the_requested_slice_size():
    model = RegionNet().eval()
    heat = attribute(model, bright_top_right_quadrant(1), 1, "gradcam", output_size=(100, 80))
    assert heat.shape == (1, 100, 80)


def test_grad_cam_layer_is_selectable_and_changes_the_map():
    model = RegionNet().eval()
    choices = layer_choices(model)
    assert choices[0] == "down" and "features.0" in choices and "head" in choices
    inputs = bright_top_right_quadrant(1)
    coarse = attribute(model, inputs, 1, "gradcam", layer="down")
    fine = attribute(model, inputs, 1, "gradcam", layer="features.0")
    assert fine.sum() > 0 and not torch.allclose(coarse / coarse.max(), fine / fine.max())
    with pytest.raises(ValueError, match="no submodule 'nowhere'"):
        attribute(model, inputs, 1, "gradcam", layer="nowhere")


def test_grad_cam_and_grad_cam_plus_plus_share_one_forward_pass():
    model = RegionNet().eval()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    targets = [torch.full((3,), 1), torch.full((3,), 2)]
    logits, maps = LayerCAM(model, model.down, ("gradcam", "gradcam++")).explain(
        bright_top_right_quadrant(), targets
    )
    assert len(calls) == 1 and set(maps) == {"gradcam", "gradcam++"}
    assert all(len(v) == 2 for v in maps.values()) and logits.shape == (3, 3, 64, 64)
    assert not torch.allclose(maps["gradcam"][0], maps["gradcam++"][0])


def test_integrated_gradients_steps_baseline_and_completeness():
    """IG's attributions sum to score(input) - score(baseline) (the completeness axiom)."""
    model = RegionNet().eval()
    inputs = bright_top_right_quadrant(2)
    explainer = IntegratedGradientsExplainer(
        model, (0.0, 1.0), steps=64, baseline=0.0, internal_batch_size=64
    )
    heat = explainer.explain(inputs, [torch.full((2,), 1)])[0]
    masks = (model(inputs).argmax(1) == 1).float()
    score = (model(inputs)[:, 1] * masks).sum(dim=(1, 2))
    baseline_score = (model(torch.zeros_like(inputs))[:, 1] * masks).sum(dim=(1, 2))
    # RegionNet's evidence is non-negative, so the positive part is the whole attribution
    torch.testing.assert_close(heat.sum(dim=(1, 2)), score - baseline_score, rtol=0.02, atol=0.5)
    assert "64 Gauss-Legendre steps" in explainer.describe()
    blurred = IntegratedGradientsExplainer(model, (0.0, 1.0), baseline="blurred")
    assert blurred.baseline_for(inputs).shape == inputs.shape
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradientsExplainer(model, (0.0, 1.0), baseline="noise")
    assert estimate_seconds(model, inputs, explained_slices=10, steps=32) > 0


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="occlusion"):
        check_methods(["gradcam", "occlusion"])
    assert check_methods(["gradcam", "gradcam"]) == ["gradcam"]
    assert all(info.sanity for info in METHODS.values())


class OutOfMemoryAbove2(nn.Module):
    """Fault injection: the wrapped net fails like a full GPU on batches over 2 slices."""

    gradcam_layer = "inner.down"

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_engine_maps_match_direct_calls_and_back_off_on_out_of_memory():
    model = RegionNet().eval()
    volume = (np.random.default_rng(0).random((5, 64, 64)) * 400).astype(np.float32)
    spec = SliceInputSpec((0.0, 400.0), (64, 64))
    engine = SliceInferenceEngine(OutOfMemoryAbove2(model), spec, torch.device("cpu"), 8)
    methods = ("gradcam", "gradcam++", "integrated-gradients")
    outputs = engine.run(volume, [1], methods=methods, uncertainty=UncertaintySpec("tta"))
    assert outputs.batch_size == 2
    inputs = spec.batch(volume, list(range(5)))
    for method in methods:
        direct = attribute(model, inputs, 1, method, hu_window=(0.0, 400.0)).numpy()
        np.testing.assert_allclose(
            outputs.heatmaps[method, 1], direct, rtol=1e-3, atol=1e-4, err_msg=method
        )
    assert outputs.integrated_gradients_estimate is not None
    assert outputs.uncertainty.shape == volume.shape
    assert 0.0 <= outputs.uncertainty.min() and outputs.uncertainty.max() <= 1.0


def test_uncertainty_is_zero_when_passes_agree_and_one_for_a_coin_toss():
    sure = torch.zeros(1, 3, 4, 4)
    sure[:, 1] = 1.0
    assert float(normalized_entropy(sure).max()) < 1e-5
    assert torch.allclose(normalized_entropy(torch.full((1, 3, 4, 4), 1 / 3)), torch.ones(1, 4, 4))


def test_augmentations_are_undone_exactly():
    x = torch.rand(2, 3, 64, 64)
    for transform, inverse in augmentation_pairs(("flip", "shift"), (64, 64)):
        assert torch.equal(inverse(transform(x)), x) and not torch.equal(transform(x), x)


def test_tta_uncertainty_is_high_where_a_flip_changes_the_answer():
    """A net that calls the left half 'liver' disagrees with itself under a flip everywhere."""

    class LeftHalf(nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            logits[:, 1, :, : x.shape[-1] // 2] = 8.0
            return logits + 0 * x.sum()

    model = LeftHalf()
    spec = SliceInputSpec((0.0, 1.0), (32, 32))
    engine = SliceInferenceEngine(model, spec, torch.device("cpu"), cam_layer=None)
    volume = np.zeros((2, 32, 32), dtype=np.float32)
    outputs = engine.run(volume, uncertainty=UncertaintySpec("tta", ("flip",)))
    assert outputs.uncertainty.mean() > 0.5  # every pixel: liver in one pass, not in the other
    with pytest.raises(ValueError, match="no dropout"):
        check_uncertainty(UncertaintySpec("mc-dropout"), model)


def test_volume_normalisations_keep_slices_comparable():
    heat = np.zeros((2, 4, 4), dtype=np.float32)
    heat[0] = 2.0
    heat[1] = 1.0
    normalize_volume(heat, "volume-max")
    assert heat.max() == 1.0 and heat[1].max() == 0.5
    spiky = np.ones((1, 100, 100), dtype=np.float32)
    spiky[0, 0, 0] = 1000.0
    normalize_volume(spiky, "volume-p99.5")
    assert spiky.max() == 1.0 and spiky[0, 50, 50] == 1.0


def test_region_normalisation_ignores_an_outlier_slice_and_keeps_an_absent_class_empty():
    heat = np.full((3, 8, 8), 0.5, dtype=np.float32)
    heat[2] = 50.0  # one slice outside the explained region with extreme values
    region = np.zeros(heat.shape, dtype=bool)
    region[:2, 2:6, 2:6] = True
    normalize_volume(heat, "region-p99", region)
    assert heat[:2].max() == pytest.approx(1.0) and heat[2].max() == 1.0  # clipped, not scaling
    nothing = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    normalize_volume(nothing, "region-p99", np.zeros(nothing.shape, dtype=bool))
    assert not nothing.any()  # no predicted region: the map looks empty, not rescaled noise
    with pytest.raises(ValueError, match="explained region"):
        normalize_volume(heat, "region-p99")
    assert all(METHODS[m].normalization == "region-p99" for m in METHODS)
    assert "99th percentile" in NORMALIZATION_DESCRIPTIONS["region-p99"]


def quadrant_on_a_dim_background(batch: int = 2) -> torch.Tensor:
    """The bright quadrant RegionNet calls class 1, on a background of 0.1: RegionNet's
    features are positive there too, yet it stays background (its logit is too small)."""
    inputs = bright_top_right_quadrant(batch)
    inputs[inputs == 0] = 0.1
    return inputs


def test_element_wise_weights_leave_pixels_the_score_does_not_depend_on_empty():
    """The cause of Grad-CAM's attention outside the body: slice-wide channel weights light
    every pixel where the same channels fire, though the explained score's gradient is zero
    there. Element-wise weights (HiResCAM) do not."""
    model = RegionNet().eval()
    inputs = quadrant_on_a_dim_background()
    assert model(inputs).argmax(1)[:, 32:, :32].max() == 0  # the dim background is class 0
    outside = ~QUADRANT_WITH_RIM[:2]
    for method in ("gradcam", "gradcam++"):
        mean = attribute(model, inputs, 1, method, weighting="channel-mean").numpy()
        local = attribute(model, inputs, 1, method, weighting="element-wise").numpy()
        assert mean[outside].sum() / mean.sum() > 0.1, method
        assert local[outside].sum() / local.sum() < 0.02, method
    with pytest.raises(ValueError, match="weighting"):
        attribute(model, inputs, 1, "gradcam", weighting="global")


@pytest.mark.parametrize(
    ("method", "weighting"),
    [
        ("gradcam", "channel-mean"),
        ("gradcam++", "channel-mean"),
        ("gradcam", "element-wise"),
        ("integrated-gradients", "channel-mean"),
    ],
)
def test_given_labels_are_what_is_explained(method: str, weighting: str):
    model = RegionNet().eval()
    inputs = bright_top_right_quadrant(2)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[0, :32, 48:] = 1  # slice 0: only the quadrant's right half; slice 1: nothing
    options = {"hu_window": (0.0, 1.0), "weighting": weighting}
    heat = attribute(model, inputs, 1, method, labels=labels, **options).numpy()
    own = attribute(model, inputs, 1, method, **options).numpy()
    assert own[1].sum() > 0 and heat[1].sum() == 0.0  # the labels, not the argmax, decide
    assert heat[0].sum() > 0
    if method == "integrated-gradients" or weighting == "element-wise":  # local methods
        right_half = np.zeros((64, 64), dtype=bool)
        right_half[:36, 44:] = True  # with the rim of one 1/4-resolution cell
        assert mass_inside(heat[0], right_half) > mass_inside(own[0], right_half)


def test_engine_explains_given_labels_only_on_the_slices_that_hold_them():
    model = RegionNet().eval()
    volume = np.zeros((4, 64, 64), dtype=np.float32)
    volume[:, :32, 32:] = 300.0
    spec = SliceInputSpec((0.0, 400.0), (64, 64))
    engine = SliceInferenceEngine(model, spec, torch.device("cpu"), 8)
    labels = np.zeros((4, 64, 64), dtype=np.uint8)
    labels[1, :32, 32:] = 1  # the network predicts class 1 on every slice; explain slice 1
    calls = []
    engine.model.register_forward_hook(lambda *_: calls.append(1))  # the engine's own copy
    outputs = engine.explain(volume, labels, [1, 2], ("gradcam", "gradcam++"))
    assert len(calls) == 1  # one slice, one forward pass for both methods and classes
    heat = outputs.heatmaps["gradcam", 1]
    assert heat[1].sum() > 0 and heat[[0, 2, 3]].sum() == 0
    assert outputs.heatmaps["gradcam++", 2].sum() == 0  # class 2 is in no label
    inputs = spec.batch(volume, [1])
    direct = attribute(model, inputs, 1, "gradcam", labels=torch.from_numpy(labels[[1]]))
    np.testing.assert_allclose(heat[1], direct[0].numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="map grid"):
        engine.explain(volume, labels[:, :32], [1])


def test_pipeline_explains_the_cleaned_labels_and_names_what_the_clean_up_removed():
    """An island the network calls class 1, away from the organ, is removed by the 3D
    clean-up: it is described in the quality output, not explained, and sets no scale."""
    from LiverXAILib.segment.pipeline import run_pipeline

    volume = np.zeros((12, 64, 64), dtype=np.float32)  # (K, J, I), identity directions
    volume[2:9, :32, 32:] = 300.0  # the organ
    volume[11, 40:56, 4:20] = 400.0  # an island, brighter than the organ
    ijk_to_ras = np.diag([1.0, 1.0, 2.5, 1.0])
    engine = SliceInferenceEngine(
        RegionNet().eval(), SliceInputSpec((0.0, 400.0), (64, 64)), torch.device("cpu"), 8
    )
    result = run_pipeline(volume, ijk_to_ras, engine, (1, 2), ("gradcam",))
    assert result.orientation.flips[0] is False  # canonical slice k is input slice k
    liver, tumour = result.heatmaps["gradcam"][1], result.heatmaps["gradcam"][2]
    assert not result.labels[11].any() and liver[11].sum() == 0  # removed: not explained
    assert liver[2:9].max() == 1.0 and liver[[0, 1, 9, 10]].sum() == 0
    assert not tumour.any()  # never predicted: an empty map
    clean_up = result.quality["cleanUp"]
    island_ml = np.count_nonzero(volume[11]) * 2.5 / 1000
    assert clean_up["slices"] == [11]
    assert clean_up["removedLiverMl"] == pytest.approx(island_ml, rel=0.2)
    assert "on slice 11 that the 3D clean-up removed" in clean_up["note"]
    methods = result.quality["methods"]["gradcam"]
    assert "99th percentile" in methods["normalization"]
    assert "averaged over the slice" in methods["weighting"]
    assert result.timings["explain"] > 0
