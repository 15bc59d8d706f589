"""Residual U-Net: a U-Net whose double convolutions are residual units, with dropout.

The residual U-Net (filters 16 to 256, dropout 0.3) of the liver-segmentation source paper
compared in this project (its full citation was not available to us offline; we worked from
its description), built from the pre-activation residual units of He, Zhang, Ren and Sun,
"Identity Mappings in Deep Residual Networks", ECCV 2016 (arXiv:1603.05027) as used in the
ResUNet of Zhang, Liu and Wang, "Road Extraction by Deep Residual U-Net", IEEE GRSL 2018
(arXiv:1711.10684), on the U-Net layout of Ronneberger et al., MICCAI 2015
(arXiv:1505.04597).

Architecture (default ``features=(16, 32, 64, 128, 256)``, input ``H x W``):

- encoder: a stem unit at ``H`` (16 filters), then four stages of 2x2 max-pool and a
  residual unit (32, 64, 128, 256 filters); the 256-filter stage at ``H/16`` is the
  bottleneck;
- decoder: four stages of 2x2 stride-2 transposed convolution, concatenation with the encoder
  output of the same resolution, dropout and a residual unit, back to 16 filters at ``H``;
- head: BatchNorm, ReLU (the pre-activation net's final activation) and a 1x1 convolution to
  ``num_classes`` logits.

Choices where the paper is vague:

- pre-activation units (:class:`PreActResBlock`): ``x' = conv(relu(bn(conv(relu(bn(x)))))) +
  shortcut(x)`` with 3x3 bias-free convolutions; the shortcut is the identity, or a bias-free
  1x1 convolution with BatchNorm where the width changes. The stem unit omits the first
  BatchNorm-ReLU, which would act on the raw windowed intensities (as in Zhang et al.);
- down-sampling by 2x2 max-pooling, as in the U-Net (ResUNet uses strided convolutions);
- dropout (elementwise, ``nn.Dropout``, p = 0.3) on the input of the bottleneck unit and of
  every decoder unit (after the concatenation): where the features are widest and a
  regulariser matters most, while the encoder's first stages see every pixel unperturbed.
  It is only active in training mode.

Args:
    in_channels: number of input channels (adjacent slices). Default 1.
    num_classes: number of output classes. Default 3.
    features: filters per stage, the last one being the bottleneck. Default
        ``(16, 32, 64, 128, 256)``; at least four stages.
    dropout: dropout probability. Default 0.3.

``forward`` returns raw logits ``(B, num_classes, H, W)``; ``H`` and ``W`` must be divisible
by ``2 ** (len(features) - 1)`` (16 by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import check_slice_batch, encode_decode


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """Bias-free 3x3 convolution with padding 1 (size kept)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


class PreActResBlock(nn.Module):
    """Pre-activation residual unit: (BN, ReLU, conv) twice, plus the (projected) input."""

    def __init__(self, in_channels: int, out_channels: int, first: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if not first:
            layers += [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)]
        layers += [
            conv3x3(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            conv3x3(out_channels, out_channels),
        ]
        self.residual = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)  # (B, C_out, H, W)


class Down(nn.Sequential):
    """2x2 max-pool, optional dropout, then a residual unit: halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [nn.MaxPool2d(kernel_size=2, stride=2)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(PreActResBlock(in_channels, out_channels))
        super().__init__(*layers)


class Up(nn.Module):
    """Transposed convolution, concatenation with the skip, dropout, then a residual unit."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, dropout: float
    ) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.dropout = nn.Dropout(dropout)
        self.block = PreActResBlock(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)  # (B, C_out, 2h, 2w)
        x = self.dropout(torch.cat([skip, x], dim=1))  # (B, C_skip + C_out, 2h, 2w)
        return self.block(x)  # (B, C_out, 2h, 2w)


class ResUNet(nn.Module):
    """Residual U-Net returning per-pixel logits; see the module docstring for arguments."""

    #: Default Grad-CAM target: the second decoder stage, at 1/4 of the input resolution.
    gradcam_layer: str = "decoder.1"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if len(features) < 4:
            raise ValueError(f"ResUNet needs at least 4 feature stages, got {features}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.features = features
        self.dropout = dropout
        self.size_divisor = 2 ** (len(features) - 1)
        # Decoder stage i outputs at 1/2**(len(features) - 2 - i) resolution; 1/4 -> i = n - 4.
        self.gradcam_layer = f"decoder.{len(features) - 4}"

        self.stem = PreActResBlock(in_channels, features[0], first=True)
        last = len(features) - 2
        self.encoder = nn.ModuleList(
            Down(c_in, c_out, dropout if i == last else 0.0)
            for i, (c_in, c_out) in enumerate(zip(features[:-1], features[1:], strict=True))
        )
        reversed_features = features[::-1]
        self.decoder = nn.ModuleList(
            Up(c_in, c_out, c_out, dropout)
            for c_in, c_out in zip(reversed_features[:-1], reversed_features[1:], strict=True)
        )
        self.head = nn.Sequential(
            nn.BatchNorm2d(features[0]),
            nn.ReLU(inplace=True),
            nn.Conv2d(features[0], num_classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` slices to ``(B, num_classes, H, W)`` logits.

        No softmax is applied here. ``H`` and ``W`` must be divisible by ``size_divisor``.
        """
        check_slice_batch(x, self.size_divisor, type(self).__name__)
        return encode_decode(self, x)
