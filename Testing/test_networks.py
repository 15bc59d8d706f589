"""Behaviour of the network registry and the 2D U-Net (no training needed)."""

import pytest
import torch
from LiverXAILib.networks import (
    MODEL_BUILDERS,
    UNet,
    available_models,
    build_model,
    count_parameters,
    gradcam_layer,
)

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
