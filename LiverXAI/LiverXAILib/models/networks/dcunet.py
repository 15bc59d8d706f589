"""DC-UNet: MultiResUNet with dual-channel blocks, for CT slices.

Lou, Guan and Loew, "DC-UNet: rethinking the U-Net architecture with dual channel efficient
CNN for medical image segmentation", SPIE Medical Imaging 2021: Image Processing, 115961T
(arXiv:2006.00414). The layers follow the authors' Keras code (github.com/AngeLouCN/DC-UNet),
which is the MultiResUNet code with its block replaced.

Architecture (``base_filters`` U = 32 as in the paper, input ``H x W``): the five-level
MultiResUNet layout of :mod:`.multiresunet` (2x2 max-pool down, Res paths of 4, 3, 2 and 1
residual units on the skips, 2x2 stride-2 transposed convolutions up, 1x1 head), with every
MultiRes block replaced by a :class:`DualChannelBlock`: two parallel chains of three 3x3
``ConvBN`` (conv, BatchNorm, ReLU) with ``int(0.167 W)``, ``int(0.333 W)`` and
``int(0.5 W)`` filters (``W = 1.67 U_i``); each chain's three outputs are concatenated and
batch-normalised, the two chains are summed, then ReLU and BatchNorm. Unlike the MultiRes
block there is no 1x1 shortcut (the Keras code comments it out).

Choices where we depart from the Keras code (the same as for MultiResUNet): every BatchNorm
has a learnable scale (Keras ``conv2d_bn`` uses ``scale=False``), and the head is a 1x1
convolution with bias returning logits instead of a bias-free 1x1 convolution, a shift-only
BatchNorm and a sigmoid. The width multiplier 1.67 of the paper is fixed.

Parameter count check. The paper reports 10.07M parameters. Counted as Keras counts
(parameters plus BatchNorm moving mean and variance) for 3 input channels and 1 output, the
Keras code gives 10,069,928, i.e. 10.07M. Our model with those settings has 10,047,070
parameters and 29,402 BatchNorm running statistics; less the 6,546 ``ConvBN`` BatchNorm
scales that Keras omits, plus the 2 moving statistics of the Keras head's BatchNorm, that is
the same 10,069,928 (checked in ``Testing/test_networks.py``). With 1 input channel and 3
classes (our default): 10,046,886 trainable parameters.

Args:
    in_channels: number of input channels (adjacent slices). Default 1.
    num_classes: number of output classes. Default 3.
    base_filters: U, the filters of the first U-Net stage the blocks stand in for. Default 32.

``forward`` returns raw logits ``(B, num_classes, H, W)``; ``H`` and ``W`` must be divisible
by 16.
"""

from __future__ import annotations

import torch
from torch import nn

from .multiresunet import ConvBN, MultiResStyleUNet, multires_widths

#: Width multiplier of the blocks, as in the paper and its code.
ALPHA = 1.67


class DualChannelBlock(nn.Module):
    """Two parallel chains of three 3x3 ConvBNs, each concatenated, summed; size kept."""

    def __init__(self, in_channels: int, filters: int, alpha: float = ALPHA) -> None:
        super().__init__()
        widths = multires_widths(filters, alpha)
        self.out_channels = sum(widths)
        inputs = (in_channels, *widths[:2])
        self.channel1 = nn.ModuleList(
            ConvBN(c_in, c_out, 3) for c_in, c_out in zip(inputs, widths, strict=True)
        )
        self.channel2 = nn.ModuleList(
            ConvBN(c_in, c_out, 3) for c_in, c_out in zip(inputs, widths, strict=True)
        )
        self.norm1 = nn.BatchNorm2d(self.out_channels)
        self.norm2 = nn.BatchNorm2d(self.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.out_norm = nn.BatchNorm2d(self.out_channels)

    @staticmethod
    def _chain(convs: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for conv in convs:
            x = conv(x)  # receptive field 3x3, 5x5, 7x7
            outputs.append(x)
        return torch.cat(outputs, dim=1)  # (B, out_channels, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(self._chain(self.channel1, x)) + self.norm2(self._chain(self.channel2, x))
        return self.out_norm(self.relu(y))  # (B, out_channels, H, W)


class DCUNet(MultiResStyleUNet):
    """DC-UNet returning per-pixel logits; see the module docstring for the arguments."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, base_filters: int = 32) -> None:
        super().__init__(in_channels, num_classes, base_filters, DualChannelBlock)
