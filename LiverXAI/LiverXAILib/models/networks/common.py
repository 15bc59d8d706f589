"""Pieces shared by the architectures: the input check and the U-Net's convolution units.

:class:`ConvBlock` and :class:`Up` are the U-Net's double 3x3 convolution and decoder stage,
used as they are by the U-Net and the VU-Net. Their submodule names are part of the saved
state dicts (``stem.0.weight``, ``decoder.1.conv.3.running_mean``, ...): the bundled
checkpoints load with ``strict=True`` only while they stay the same.
"""

from __future__ import annotations

import torch
from torch import nn

from .concat_conv import convolve_concatenation


def check_slice_batch(x: torch.Tensor, size_divisor: int, name: str) -> None:
    """Raise a ValueError unless ``x`` is ``(B, C, H, W)`` with H, W divisible by size_divisor.

    ``name`` (the architecture's class name) starts the message.
    """
    if x.ndim != 4:
        raise ValueError(f"{name} expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % size_divisor or width % size_divisor:
        raise ValueError(
            f"{name} input size {height}x{width} is not divisible by {size_divisor}; "
            "resize or pad the slices first"
        )


#: Feature normalisations a ConvBlock can use: ``batch`` (statistics of the training batches,
#: frozen at inference; the default and the bundled models') or ``instance`` (each slice's own
#: per-channel statistics, in training and at inference, as nnU-Net does, so a global shift of
#: a scan's intensities matters less).
NORMS = ("batch", "instance")


def feature_norm(channels: int, norm: str = "batch") -> nn.Module:
    """The normalisation layer named by ``norm`` (one of :data:`NORMS`) for ``channels``."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"Unknown norm {norm!r}; available: {', '.join(NORMS)}")


def conv_bn_relu(
    in_channels: int, out_channels: int, dilation: int = 1, norm: str = "batch"
) -> list[nn.Module]:
    """A bias-free 3x3 convolution (size kept), a normalisation (BatchNorm) and ReLU."""
    return [
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            padding=dilation,
            dilation=dilation,
            bias=False,
        ),
        feature_norm(out_channels, norm),
        nn.ReLU(inplace=True),
    ]


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions (padding = dilation), each followed by a normalisation (``norm``,
    BatchNorm by default) and ReLU; size kept."""

    def __init__(
        self, in_channels: int, out_channels: int, dilation: int = 1, norm: str = "batch"
    ) -> None:
        super().__init__(
            *conv_bn_relu(in_channels, out_channels, dilation, norm),
            *conv_bn_relu(out_channels, out_channels, dilation, norm),
        )


class Up(nn.Module):
    """2x2 stride-2 transposed convolution, concatenation with the skip, then a ConvBlock."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = ConvBlock(out_channels + skip_channels, out_channels, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)  # (B, C_out, 2h, 2w)
        # self.conv(torch.cat([skip, x], dim=1)), with a cheaper Grad-CAM backward
        return convolve_concatenation(skip, x, self.conv)  # (B, C_out, 2h, 2w)


def encode_decode(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The U-Net data path shared by U-Net and residual U-Net.

    ``network`` has ``stem``, ``encoder`` (downsampling stages, the last being the
    bottleneck), ``decoder`` (stages taking ``(x, skip)``) and ``head``.
    """
    x = network.stem(x)  # (B, F0, H, W)
    skips = [x]
    for down in network.encoder:
        x = down(x)  # (B, F_i+1, H/2**(i+1), W/2**(i+1)); last: the bottleneck
        skips.append(x)
    skips.pop()  # the bottleneck output is not a skip
    for up in network.decoder:
        x = up(x, skips.pop())  # (B, F, 2h, 2w): back up one level
    return network.head(x)  # (B, num_classes, H, W)
