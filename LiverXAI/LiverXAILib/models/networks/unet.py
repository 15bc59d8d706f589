"""2D U-Net for liver and liver-tumour segmentation of CT slices.

Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597), in the reduced-width form that the source
papers train on LiTS axial slices for liver and tumour segmentation.

Architecture (default ``features=(16, 32, 64, 128, 256)``, input ``H x W``):

- encoder: a :class:`ConvBlock` at full resolution (16 filters), then four :class:`Down`
  stages (2x2 max-pool, then a ConvBlock) with 32, 64, 128 and 256 filters; the 256-filter
  stage at ``H/16`` is the bottleneck;
- decoder: four :class:`Up` stages (2x2 stride-2 transposed convolution, concatenation with
  the encoder output of the same resolution, then a ConvBlock) back to 16 filters at ``H``;
- head: a 1x1 convolution to ``num_classes`` logits.

Each ConvBlock is two 3x3 convolutions (padding 1) each followed by BatchNorm (or, with
``norm="instance"``, InstanceNorm) and ReLU, so
the output has the input's spatial size. ``H`` and ``W`` must be divisible by ``2 ** (len(
features) - 1)`` (16 by default).

Args:
    in_channels: number of input channels, i.e. adjacent axial slices stacked as channels
        (1 = plain 2D, 3 = 2.5D with one neighbour on each side). Default 1.
    num_classes: number of output classes (background, liver, tumour). Default 3.
    features: filters per encoder stage, the last one being the bottleneck. Default
        ``(16, 32, 64, 128, 256)``; at least four stages.
    norm: ``"batch"`` (default) or ``"instance"`` (:data:`common.NORMS`).

``forward`` returns raw logits of shape ``(B, num_classes, H, W)``; the caller applies the
softmax (the inference engine) or the loss does (training).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import ConvBlock, Up, check_slice_batch, encode_decode


class Down(nn.Sequential):
    """2x2 max-pool then a ConvBlock: halves the resolution, changes the channel count."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch") -> None:
        super().__init__(
            nn.MaxPool2d(kernel_size=2, stride=2),  # (B, C_in, H/2, W/2)
            ConvBlock(in_channels, out_channels, norm=norm),  # (B, C_out, H/2, W/2)
        )


class UNet(nn.Module):
    """2D U-Net returning per-pixel logits; see the module docstring for the arguments."""

    #: Dotted name (as in ``named_modules()``) of the default Grad-CAM target: the output of
    #: the second decoder stage, at 1/4 of the input resolution (32x32 for a 128x128 input).
    #: It has seen the bottleneck's context, so its features are class-specific, yet it is
    #: fine enough for the heat map to follow a small tumour; the bottleneck (1/16) is too
    #: coarse and the last decoder stage mostly encodes edges. Segment & Explain uses the
    #: stage measured best on real CT instead (``explain.MEASURED_CAM_LAYERS``: the one at 1/2).
    gradcam_layer: str = "decoder.1"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        norm: str = "batch",
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) < 4:
            raise ValueError(f"UNet needs at least 4 feature stages, got {features}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.features = features
        self.size_divisor = 2 ** (len(features) - 1)
        # Decoder stage i outputs at 1/2**(len(features) - 2 - i) resolution; 1/4 -> i = n - 4.
        self.gradcam_layer = f"decoder.{len(features) - 4}"

        self.stem = ConvBlock(in_channels, features[0], norm=norm)
        self.encoder = nn.ModuleList(
            Down(c_in, c_out, norm) for c_in, c_out in zip(features[:-1], features[1:], strict=True)
        )
        reversed_features = features[::-1]
        self.decoder = nn.ModuleList(
            Up(c_in, c_out, c_out, norm)
            for c_in, c_out in zip(reversed_features[:-1], reversed_features[1:], strict=True)
        )
        self.head = nn.Conv2d(features[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` slices to ``(B, num_classes, H, W)`` logits.

        No softmax is applied here. ``H`` and ``W`` must be divisible by ``size_divisor``.
        """
        check_slice_batch(x, self.size_divisor, type(self).__name__)
        return encode_decode(self, x)
