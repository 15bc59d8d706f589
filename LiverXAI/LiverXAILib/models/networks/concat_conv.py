"""A decoder's concatenation and first convolution, with a backward that skips the skip.

A U-Net decoder stage convolves ``cat([skip, x])``. When Grad-CAM differentiates the network
from its target layer on, only ``x`` depends on that layer: the skip comes from the encoder,
which ran without a graph. Autograd would still compute the convolution's input gradient for
every concatenated channel and then throw the skip's half away. :func:`convolve_concatenation`
computes the same forward and, in exactly that situation, a backward for ``x`` alone (the
convolution's weights restricted to ``x``'s channels), and keeps no concatenated tensor for
it. On this project's 2-core CPU, the engine's Grad-CAM run over the 119-slice IRCADb CT
went from 3.43 to 2.89 s (median of five, same process). Elsewhere (training, Integrated
Gradients, hooks on the block, mixed precision) it is the plain
``block(torch.cat([skip, x], 1))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ConcatenationConvolution(torch.autograd.Function):
    """``conv2d(cat([skip, x]), weight, bias)``; gradient for ``x`` only."""

    @staticmethod
    def forward(ctx, skip, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.settings = (skip.shape[1], stride, padding, dilation)
        return F.conv2d(torch.cat([skip, x], dim=1), weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        skip_channels, stride, padding, dilation = ctx.settings
        weight_x = weight[:, skip_channels:].clone()  # dense, in the weight's memory layout
        grad_x = torch.nn.grad.conv2d_input(
            x.shape, weight_x, grad_output, stride, padding, dilation
        )
        return None, grad_x, None, None, None, None, None


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 asks per device kind
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def _only_x_needs_a_gradient(skip: torch.Tensor, x: torch.Tensor, block: nn.Sequential) -> bool:
    first = block[0] if len(block) else None
    return (
        torch.is_grad_enabled()
        and x.requires_grad
        and not skip.requires_grad
        and isinstance(first, nn.Conv2d)
        and first.groups == 1
        and first.padding_mode == "zeros"
        and isinstance(first.padding, tuple)
        and not any(p.requires_grad for p in first.parameters())
        and not _has_hooks(block)
        and not _has_hooks(first)
        and not _autocast_on(x.device.type)
    )


def convolve_concatenation(
    skip: torch.Tensor, x: torch.Tensor, block: nn.Sequential
) -> torch.Tensor:
    """``block(torch.cat([skip, x], dim=1))`` for a block that starts with a ``Conv2d``."""
    if not _only_x_needs_a_gradient(skip, x, block):
        return block(torch.cat([skip, x], dim=1))
    first = block[0]
    output = _ConcatenationConvolution.apply(
        skip, x, first.weight, first.bias, first.stride, first.padding, first.dilation
    )
    for layer in list(block)[1:]:
        output = layer(output)
    return output
