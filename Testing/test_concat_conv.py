"""The decoder's concatenation + convolution: same forward, and a backward for x alone
exactly when Grad-CAM needs only that; the plain concatenation everywhere else."""

from __future__ import annotations

import pytest
import torch
from LiverXAILib.explain.cam import LayerCAM
from LiverXAILib.models.networks import build_model, concat_conv, gradcam_layer
from LiverXAILib.models.networks.common import ConvBlock
from LiverXAILib.models.networks.concat_conv import convolve_concatenation


def _graph_names(tensor: torch.Tensor) -> set[str]:
    names, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None:
            names.add(type(node).__name__)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def _frozen_block(dilation: int = 1) -> ConvBlock:
    torch.manual_seed(0)
    block = ConvBlock(6 + 4, 5, dilation).eval()
    for parameter in block.parameters():
        parameter.requires_grad_(False)
    return block


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dilation", [1, 2])
def test_output_and_gradient_for_x_equal_the_plain_concatenation(layout, dilation):
    block = _frozen_block(dilation).to(memory_format=layout)
    skip = torch.randn(3, 6, 16, 12).contiguous(memory_format=layout)
    x = torch.randn(3, 4, 16, 12).contiguous(memory_format=layout).requires_grad_(True)
    weights = torch.randn(3, 5, 16, 12)

    output = convolve_concatenation(skip, x, block)
    assert "_ConcatenationConvolutionBackward" in _graph_names(output)
    (gradient,) = torch.autograd.grad((output * weights).sum(), x)

    x_plain = x.detach().clone().requires_grad_(True)
    expected = block(torch.cat([skip, x_plain], dim=1))
    assert "CatBackward0" in _graph_names(expected)
    (expected_gradient,) = torch.autograd.grad((expected * weights).sum(), x_plain)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-5, atol=1e-6)


def test_the_plain_concatenation_runs_whenever_more_than_x_needs_a_gradient():
    skip, x = torch.randn(2, 6, 8, 8), torch.randn(2, 4, 8, 8, requires_grad=True)

    training = ConvBlock(10, 5)  # weights that train need their own gradients
    assert "CatBackward0" in _graph_names(convolve_concatenation(skip, x, training))

    block = _frozen_block()
    skip_with_gradient = skip.clone().requires_grad_(True)  # Integrated Gradients, input on
    output = convolve_concatenation(skip_with_gradient, x, block)
    assert "CatBackward0" in _graph_names(output)

    handle = block.register_forward_hook(lambda *_: None)  # a user's hook must still fire
    assert "CatBackward0" in _graph_names(convolve_concatenation(skip, x, block))
    handle.remove()

    with torch.no_grad():  # no graph at all: the plain path, same values
        plain = convolve_concatenation(skip, x, block)
    torch.testing.assert_close(plain, block(torch.cat([skip, x], dim=1)))


@pytest.mark.parametrize("architecture", ["unet", "vunet"])
def test_grad_cam_maps_are_those_of_the_plain_network(architecture, monkeypatch):
    calls = []
    apply = concat_conv._ConcatenationConvolution.apply
    monkeypatch.setattr(
        concat_conv._ConcatenationConvolution,
        "apply",
        lambda *args: calls.append(1) or apply(*args),
    )
    torch.manual_seed(1)
    model = build_model(architecture, in_channels=1, num_classes=3).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    inputs = torch.rand(4, 1, 64, 64)
    targets = [torch.full((4,), c) for c in (1, 2)]
    cam = LayerCAM(model, gradcam_layer(model), ["gradcam", "gradcam++"])
    logits, maps = cam.explain(inputs, targets)
    assert len(calls) == 2  # the two decoder stages after the Grad-CAM layer

    # a hook on every decoder block forces the plain concatenation
    handles = [
        module.conv.register_forward_hook(lambda *_: None)
        for module in model.modules()
        if type(module).__name__ == "Up"
    ]
    plain_logits, plain_maps = cam.explain(inputs, targets)
    assert len(calls) == 2
    for handle in handles:
        handle.remove()
    assert handles
    torch.testing.assert_close(logits, plain_logits)
    for variant in maps:
        for fast, plain in zip(maps[variant], plain_maps[variant], strict=True):
            torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-6)
    assert any(float(m.max()) > 0 for m in maps["gradcam"])  # something was explained
