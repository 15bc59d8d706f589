"""VU-Net: a 2D V-Net encoder with a U-Net decoder, for liver and tumour CT slices.

The VU-Net of the liver-segmentation source paper compared in this project (its full citation
was not available to us offline; we worked from its description): a 2D adaptation of V-Net
(Milletari, Navab and Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation", 3DV 2016, arXiv:1606.04797) whose encoder stages are residual,
joined to a U-Net decoder (Ronneberger, Fischer and Brox, MICCAI 2015, arXiv:1505.04597)
through "connecting pathways" that pass each skip through a 5x5 pooling module. The paper
gives the stages, filters and modules but not every layer; our choices are listed below.

Architecture (default ``features=(16, 32, 64, 128, 256)``, input ``H x W``):

- encoder: five :class:`ResidualStage` (16, 32, 64, 128 and 256 filters at ``H``, ``H/2``,
  ``H/4``, ``H/8`` and ``H/16``), each two 3x3 convolutions with BatchNorm and ReLU whose
  output is added elementwise to the stage input (V-Net's residual stage); between stages a
  V-Net down-convolution (2x2, stride 2, doubling the filters, BatchNorm, ReLU);
- bottleneck: two 3x3 convolutions with BatchNorm and ReLU at ``H/16`` (``dilation`` > 1
  widens their receptive field without more down-sampling);
- connecting pathways: each of the four encoder outputs at ``H`` .. ``H/8`` goes through a
  :class:`PoolingPathway` before the decoder sees it;
- decoder: four U-Net stages (2x2 stride-2 transposed convolution, concatenation with the
  pathway output, two 3x3 convolutions with BatchNorm and ReLU) back to 16 filters at ``H``;
- head: a 1x1 convolution to ``num_classes`` (3) logits; the caller applies the softmax.

Choices where the paper is vague:

- 3x3 kernels (V-Net uses 5x5x5) for the 2D adaptation, as in the U-Net;
- the stage's residual is V-Net's: ``out = relu(bn(conv(relu(bn(conv(x)))))) + proj(x)``
  with no activation after the sum; ``proj`` is the identity except in the first stage,
  where a 1x1 convolution with BatchNorm lifts the ``in_channels`` input to 16 channels
  (V-Net replicates its single channel 16 times instead);
- down-sampling by strided convolution, as in V-Net, not by max-pooling;
- the fifth stage (256 filters) sits at ``H/16`` and the bottleneck follows it at the same
  resolution with 256 filters, so inputs need only be divisible by 16 (as for the U-Net) and
  a 128x128 slice keeps an 8x8 bottleneck;
- the 5x5 pooling module is one block of RefineNet's chained residual pooling (Lin et al.,
  CVPR 2017): ``skip + conv3x3(maxpool5x5(skip))``, max-pool with stride 1 and padding 2 so
  the size is kept, bias-free 3x3 convolution; it adds context from a 5x5 neighbourhood to
  the skip while the identity keeps the fine detail;
- the decoder's transposed convolution has a bias and no BatchNorm, as in our U-Net.

Args:
    in_channels: number of input channels (adjacent slices). Default 1.
    num_classes: number of output classes. Default 3.
    features: filters of the five encoder stages. Default ``(16, 32, 64, 128, 256)``.
    dilation: dilation of the two bottleneck convolutions. Default 1.

``forward`` returns raw logits ``(B, num_classes, H, W)``; ``H`` and ``W`` must be divisible
by 16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import ConvBlock, Up, check_slice_batch


class ResidualStage(nn.Module):
    """V-Net stage: a ConvBlock plus the stage input (1x1-projected if the width changes)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = ConvBlock(in_channels, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + self.shortcut(x)  # (B, C_out, H, W)


class DownConv(nn.Sequential):
    """V-Net down-convolution: 2x2 stride-2 convolution, BatchNorm and ReLU; halves H, W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class PoolingPathway(nn.Module):
    """Connecting pathway: ``skip + conv3x3(maxpool5x5(skip))``, stride 1, size kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)

    def forward(self, skip: torch.Tensor) -> torch.Tensor:
        return skip + self.conv(self.pool(skip))  # (B, C, H, W)


class VUNet(nn.Module):
    """VU-Net returning per-pixel logits; see the module docstring for the arguments."""

    #: Default Grad-CAM target: the second decoder stage, at 1/4 of the input resolution
    #: (32x32 for a 128x128 input), as for the U-Net.
    gradcam_layer: str = "decoder.1"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dilation: int = 1,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) != 5:
            raise ValueError(f"VUNet needs 5 encoder stages, got {features}")
        if in_channels < 1 or num_classes < 1 or dilation < 1:
            raise ValueError(
                "in_channels, num_classes and dilation must be >= 1, got "
                f"{in_channels}, {num_classes}, {dilation}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.features = features
        self.dilation = dilation
        self.size_divisor = 2 ** (len(features) - 1)

        self.encoder = nn.ModuleList([ResidualStage(in_channels, features[0])])
        self.down = nn.ModuleList()
        for c_in, c_out in zip(features[:-1], features[1:], strict=True):
            self.down.append(DownConv(c_in, c_out))
            self.encoder.append(ResidualStage(c_out, c_out))
        self.bottleneck = ConvBlock(features[-1], features[-1], dilation)
        self.pathways = nn.ModuleList(PoolingPathway(c) for c in features[:-1])
        reversed_features = features[::-1]
        self.decoder = nn.ModuleList(
            Up(c_in, c_out, c_out)
            for c_in, c_out in zip(reversed_features[:-1], reversed_features[1:], strict=True)
        )
        self.head = nn.Conv2d(features[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` slices to ``(B, num_classes, H, W)`` logits.

        No softmax is applied here. ``H`` and ``W`` must be divisible by ``size_divisor``.
        """
        check_slice_batch(x, self.size_divisor, type(self).__name__)
        x = self.encoder[0](x)  # (B, F0, H, W)
        skips = [x]
        for down, stage in zip(self.down, self.encoder[1:], strict=True):
            x = stage(down(x))  # (B, F_i+1, H/2**(i+1), W/2**(i+1))
            skips.append(x)
        skips.pop()  # the H/16 stage feeds the bottleneck, not a skip
        x = self.bottleneck(x)  # (B, F4, H/16, W/16)
        skips = [pathway(skip) for pathway, skip in zip(self.pathways, skips, strict=True)]
        for up in self.decoder:
            x = up(x, skips.pop())  # (B, F, 2h, 2w): back up one level
        return self.head(x)  # (B, num_classes, H, W)
