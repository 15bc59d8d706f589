"""Behaviour of the network registry, the 2D U-Net and the other architectures (no training)."""

import json

import numpy as np
import pytest
import torch
from LiverXAILib.constants import DEFAULT_HU_WINDOW, LIVER, TUMOR
from LiverXAILib.models.networks import (
    MODEL_BUILDERS,
    UNet,
    available_models,
    build_model,
    count_parameters,
    gradcam_layer,
)
from LiverXAILib.segment.inference import SliceInferenceEngine
from LiverXAILib.segment.preprocessing import SliceInputSpec

# Hand count for features (16, 32, 64, 128, 256), bias-free convolutions before BatchNorm:
# encoder 1 177 488 (1 channel in), decoder 761 840, head 51 and BatchNorm 2 944 -> 1 942 323.
UNET_PARAMETERS_1_CHANNEL = 1_942_323


@pytest.fixture(scope="module")
def unet() -> UNet:
    torch.manual_seed(0)
    return build_model("unet").eval()


def test_registry_lists_unet() -> None:
    assert "unet" in available_models()
    assert available_models() == sorted(MODEL_BUILDERS)
    assert isinstance(build_model("UNet"), UNet)


def test_unknown_model_name_lists_available_ones() -> None:
    with pytest.raises(ValueError, match="no-such-net.*unet"):
        build_model("no-such-net")


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [128, 256])
def test_output_is_logits_of_input_size(in_channels: int, size: int) -> None:
    model = build_model("unet", in_channels=in_channels).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, size, size))
    assert logits.shape == (2, 3, size, size)
    assert logits.dtype == torch.float32
    # Logits, not probabilities: the classes do not sum to one.
    assert not torch.allclose(logits.sum(dim=1), torch.ones(2, size, size))


def test_non_square_input_and_class_count() -> None:
    model = build_model("unet", num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 96)).shape == (1, 2, 64, 96)


def test_parameter_count(unet: UNet) -> None:
    assert count_parameters(unet) == UNET_PARAMETERS_1_CHANNEL
    assert 1.8e6 < count_parameters(unet) < 2.0e6
    # Two more input channels add 2 * 16 * 3 * 3 weights to the first convolution.
    assert count_parameters(UNet(in_channels=3)) == UNET_PARAMETERS_1_CHANNEL + 2 * 16 * 9
    unet_frozen = UNet()
    unet_frozen.head.requires_grad_(False)
    assert count_parameters(unet_frozen, trainable_only=True) == UNET_PARAMETERS_1_CHANNEL - 51


def test_default_gradcam_layer_is_quarter_resolution(unet: UNet) -> None:
    layer = gradcam_layer(unet)
    assert layer is dict(unet.named_modules())[unet.gradcam_layer]
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, output: captured.append(output.shape))
    try:
        with torch.no_grad():
            unet(torch.randn(1, 1, 128, 128))
    finally:
        handle.remove()
    assert captured == [torch.Size([1, 64, 32, 32])]


def test_gradcam_layer_by_name_and_errors(unet: UNet) -> None:
    assert gradcam_layer(unet, "head") is unet.head
    with pytest.raises(ValueError, match="no submodule 'decoder.9'"):
        gradcam_layer(unet, "decoder.9")
    with pytest.raises(ValueError, match="declares no default Grad-CAM layer"):
        gradcam_layer(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1)))


@pytest.mark.parametrize("shape", [(1, 1, 100, 128), (1, 1, 128, 120)])
def test_size_not_divisible_by_16_is_refused(unet: UNet, shape: tuple[int, ...]) -> None:
    height, width = shape[-2:]
    with pytest.raises(ValueError, match=f"{height}x{width}.*16"):
        unet(torch.randn(*shape))


def test_input_must_be_a_batch_of_images(unet: UNet) -> None:
    with pytest.raises(ValueError, match="B, C, H, W"):
        unet(torch.randn(1, 128, 128))


# --- every registered architecture ---------------------------------------------------------
ALL_MODELS = ["unet", "vunet", "resunet", "multiresunet", "dcunet", "transunet"]
# Cheap enough to run at 256x256 in the suite (MultiResUNet and DCUNet are 4-5x the U-Net).
CHEAP_MODELS = ["unet", "vunet", "resunet", "transunet"]

# Trainable parameters with in_channels=1, num_classes=3 and default arguments, summed from
# the layer shapes (by hand for the blocks, checked against count_parameters):
# - vunet: encoder stages 1 571 200 (first stage 2 560 incl. its 1x1 projection, then
#   9*2*C^2 + 4C for C = 32..256), down-convs 175 040, bottleneck 1 180 672, 5x5-pooling
#   pathways 195 840 (9 C^2 for C = 16..128), decoder 762 800, head 51;
# - resunet: stem 2 528, encoder 1 220 960, decoder 807 280, head (BN + 1x1 conv) 83;
# - multiresunet / dcunet: see the Keras comparison below and the module docstrings;
# - transunet (small): CNN encoder 213 616, patch embedding 65 792, position embedding
#   64 * 256, transformer 4 * 527 104 (LN 1 024, qkv 197 376, out 65 792, MLP 262 912) and
#   final LN 512, CUP 925 120, head 435.
EXPECTED_PARAMETERS = {
    "unet": UNET_PARAMETERS_1_CHANNEL,
    "vunet": 3_885_603,
    "resunet": 2_030_851,
    "multiresunet": 7_244_632,
    "dcunet": 10_046_886,
    "transunet": 3_330_275,
}

# Non-default, JSON-serialisable constructor arguments for the checkpoint round trip.
ROUND_TRIP_KWARGS = {
    "unet": {"features": [8, 16, 32, 64, 128]},
    "vunet": {"features": [8, 16, 32, 64, 128], "dilation": 2},
    "resunet": {"features": [8, 16, 32, 64], "dropout": 0.2},
    "multiresunet": {"base_filters": 8, "alpha": 1.5},
    "dcunet": {"base_filters": 8},
    "transunet": {"variant": "small", "image_size": 64, "dropout": 0.0},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this file's small tensors on one thread: on a busy 2-core machine two OpenMP
    threads wait on each other and the file takes minutes instead of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """One default model (1 input channel, 3 classes) per architecture, in eval mode."""
    torch.manual_seed(0)
    return {name: build_model(name).eval() for name in ALL_MODELS}


def run_with_hook(model: torch.nn.Module, inputs: torch.Tensor):
    """Logits and the Grad-CAM layer's output, checking the output is never changed in place."""
    captured = []

    def keep(_module, _inputs, output):
        captured.append((output, output._version))

    handle = gradcam_layer(model).register_forward_hook(keep)
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    assert len(captured) == 1, "the Grad-CAM layer must run exactly once per forward pass"
    activation, version = captured[0]
    assert activation._version == version, "the Grad-CAM activation was modified in place"
    return logits, activation


def test_registry_lists_every_architecture() -> None:
    assert available_models() == sorted(ALL_MODELS)
    for name in ALL_MODELS:
        model = MODEL_BUILDERS[name]()
        assert (model.in_channels, model.num_classes) == (1, 3)
        assert model.size_divisor == 16
        assert isinstance(build_model(name.upper()), MODEL_BUILDERS[name])


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_maps_a_slice_to_logits(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=in_channels).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, in_channels, 128, 128))  # batch of one, eval mode
    assert logits.shape == (1, 3, 128, 128)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits.sum(dim=1), torch.ones(1, 128, 128))


@pytest.mark.parametrize("name", CHEAP_MODELS)
def test_cheap_models_run_at_256_with_five_slices(name: str) -> None:
    model = build_model(name, in_channels=5, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 5, 256, 256)).shape == (1, 2, 256, 256)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_gradcam_layer_is_quarter_resolution_and_receives_gradients(models, name: str) -> None:
    model = models[name]
    assert gradcam_layer(model) is dict(model.named_modules())[model.gradcam_layer]
    logits, activation = run_with_hook(model, torch.randn(2, 1, 32, 32))
    assert activation.ndim == 4
    assert activation.shape[0] == 2 and activation.shape[-2:] == (8, 8)
    (gradient,) = torch.autograd.grad(logits.sum(), activation)
    assert gradient.shape == activation.shape
    assert gradient.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_MODELS)
def test_training_mode_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).train()
    logits = model(torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 3, 32, 32)
    logits.square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters outside the graph: {unused[:5]}"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_mode_is_deterministic(models, name: str) -> None:
    inputs = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(models[name](inputs), models[name](inputs))


def test_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(2, 1, 32, 32)
    for name in ("resunet", "transunet"):
        model = build_model(name).train()
        with torch.no_grad():
            assert not torch.equal(model(inputs), model(inputs)), name


@pytest.mark.parametrize("name", ALL_MODELS)
def test_autocast_forward(models, name: str) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = models[name](torch.randn(1, 1, 32, 32))
    assert logits.shape == (1, 3, 32, 32)
    assert logits.is_floating_point() and torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("shape", [(1, 1, 64, 72), (1, 1, 40, 64)])
def test_size_not_divisible_is_refused_by_every_model(models, name, shape) -> None:
    height, width = shape[-2:]
    with pytest.raises(ValueError, match=f"{height}x{width} is not divisible by 16"):
        models[name](torch.randn(*shape))
    with pytest.raises(ValueError, match="B, C, H, W"):
        models[name](torch.randn(1, 64, 64))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_counts(models, name: str) -> None:
    assert count_parameters(models[name]) == EXPECTED_PARAMETERS[name]


# MultiResUNet and DC-UNet against the papers. Keras counts parameters plus BatchNorm moving
# mean and variance; its conv2d_bn BatchNorm has no scale (gamma) and its head is a bias-free
# 1x1 convolution + BatchNorm (beta, mean, var) + sigmoid. keras_count() re-derives the
# authors' Keras models layer by layer (3 input channels, 1 output, U = 32, alpha = 1.67).
def keras_count(block: str) -> int:
    def conv_bn(c_in: int, c_out: int, k: int) -> int:
        return k * k * c_in * c_out + 3 * c_out  # kernel + beta, moving mean, moving var

    def chain(c_in: int, u: int) -> tuple[int, int]:
        w = 1.67 * u
        widths = (int(w * 0.167), int(w * 0.333), int(w * 0.5))
        ins = (c_in, *widths[:2])
        return sum(conv_bn(a, b, 3) for a, b in zip(ins, widths, strict=True)), sum(widths)

    def multires(c_in: int, u: int) -> tuple[int, int]:
        n, out = chain(c_in, u)
        return n + conv_bn(c_in, out, 1) + 2 * 4 * out, out  # shortcut, two full BNs

    def dual_channel(c_in: int, u: int) -> tuple[int, int]:
        n, out = chain(c_in, u)
        return 2 * n + 3 * 4 * out, out  # two chains, three full BNs

    make = multires if block == "multires" else dual_channel
    total, channels = 0, 3
    for level in range(5):
        u = 32 * 2**level
        n, channels_out = make(channels, u)
        total += n
        if level < 4:  # Res path of 4 - level units with u filters
            c = channels_out
            for _ in range(4 - level):
                total += conv_bn(c, u, 1) + conv_bn(c, u, 3) + 4 * u
                c = u
        channels = channels_out
    for level in (3, 2, 1, 0):
        u = 32 * 2**level
        total += 4 * channels * u + u  # 2x2 transposed convolution with bias
        n, channels = make(2 * u, u)
        total += n
    return total + conv_bn(channels, 1, 1)


def keras_equivalent_count(model: torch.nn.Module) -> int:
    """Our parameters + BatchNorm running stats - ConvBN scales + the Keras head's BN stats."""
    from LiverXAILib.models.networks.multiresunet import ConvBN

    parameters = count_parameters(model)
    running = sum(b.numel() for n, b in model.named_buffers() if "running_" in n)
    scales = sum(m[1].weight.numel() for m in model.modules() if isinstance(m, ConvBN))
    return parameters + running - scales + 2


def test_multiresunet_matches_the_paper_parameter_count() -> None:
    assert keras_count("multires") == 7_262_750  # Ibtehaz & Rahman 2020, 2D MultiResUNet
    assert keras_equivalent_count(build_model("multiresunet", in_channels=3, num_classes=1)) == (
        7_262_750
    )


def test_dcunet_matches_the_paper_parameter_count() -> None:
    assert keras_count("dual") == 10_069_928  # the paper reports 10.07M
    model = build_model("dcunet", in_channels=3, num_classes=1)
    assert keras_equivalent_count(model) == 10_069_928


def test_paper_transunet_has_the_r50_vit_b_size() -> None:
    # R50 (3/4/9 units) + ViT-B/16 (12 x 7 087 872) + CUP: 105.28M as usually reported, with
    # 3 input channels, 9 classes and 224 x 224 inputs (a 14 x 14 position embedding).
    model = build_model("transunet", in_channels=3, num_classes=9, variant="paper", image_size=224)
    assert count_parameters(model) == 105_277_081
    assert count_parameters(model.transformer) == 12 * 7_087_872


@pytest.mark.parametrize("name", ALL_MODELS)
def test_build_model_round_trip_from_json_kwargs(name: str) -> None:
    kwargs = {"in_channels": 3, "num_classes": 2, **ROUND_TRIP_KWARGS[name]}
    torch.manual_seed(0)
    original = build_model(name, **kwargs).eval()
    rebuilt = build_model(name, **json.loads(json.dumps(kwargs))).eval()
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    inputs = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(inputs), original(inputs))


def test_transunet_interpolates_position_embeddings_for_other_sizes() -> None:
    torch.manual_seed(0)
    model = build_model("transunet", image_size=128).eval()
    assert model.position_embedding.shape == (1, 8 * 8, 256)
    assert model.position_embeddings(8, 8) is model.position_embedding
    assert model.position_embeddings(16, 12).shape == (1, 16 * 12, 256)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 256, 256)).shape == (1, 3, 256, 256)
        assert model(torch.randn(1, 1, 64, 96)).shape == (1, 3, 64, 96)


def test_transunet_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown TransUNet variant 'huge'.*paper.*small"):
        build_model("transunet", variant="huge")
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model("transunet", image_size=100)


def test_vunet_dilation_reaches_the_bottleneck() -> None:
    model = build_model("vunet", dilation=2)
    dilations = {m.dilation for m in model.bottleneck.modules() if isinstance(m, torch.nn.Conv2d)}
    assert dilations == {(2, 2)}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_inference_engine_and_grad_cam_run_every_architecture(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=3)
    volume = np.random.default_rng(0).integers(-1000, 1001, size=(4, 64, 64)).astype(np.int16)
    spec = SliceInputSpec(DEFAULT_HU_WINDOW, (64, 64), num_slices=3)
    engine = SliceInferenceEngine(model, spec, torch.device("cpu"), batch_size=2)
    outputs = engine.run(volume, [LIVER, TUMOR], methods=("gradcam", "gradcam++"))
    assert outputs.labels.shape == (4, 64, 64) and outputs.labels.dtype == np.uint8
    assert outputs.labels.max() <= 2
    assert set(outputs.heatmaps) == {
        (m, c) for m in ("gradcam", "gradcam++") for c in (LIVER, TUMOR)
    }
    for heatmap in outputs.heatmaps.values():
        assert heatmap.shape == (4, 64, 64)
        assert np.isfinite(heatmap).all() and heatmap.min() >= 0
