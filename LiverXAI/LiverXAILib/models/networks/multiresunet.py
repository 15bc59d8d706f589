"""MultiResUNet: a U-Net with MultiRes blocks and Res paths, for CT slices.

Ibtehaz and Rahman, "MultiResUNet: Rethinking the U-Net architecture for multimodal
biomedical image segmentation", Neural Networks 121:74-87, 2020 (arXiv:1902.04049). The
layers follow the authors' Keras code (github.com/nibtehaz/MultiResUNet), which fixes what
the paper leaves open (rounding of the filter counts, where BatchNorm sits).

Architecture (``base_filters`` U = 32 and ``alpha`` = 1.67 as in the paper, input ``H x W``):

- :class:`MultiResBlock` with ``W = alpha * U_i`` replaces the U-Net's two convolutions: a
  chain of three 3x3 ``ConvBN`` (conv, BatchNorm, ReLU) with ``int(0.167 W)``,
  ``int(0.333 W)`` and ``int(0.5 W)`` filters (the paper's W/6, W/3, W/2, i.e. the receptive
  fields of a 3x3, 5x5 and 7x7 convolution), concatenated and batch-normalised, plus a 1x1
  ``ConvBN`` shortcut; then ReLU and BatchNorm. ``U_i`` = U, 2U, 4U, 8U, 16U down the encoder
  (at ``H``, ``H/2``, ... ``H/16``, 2x2 max-pool between) and 8U, 4U, 2U, U up the decoder;
- :class:`ResPath` on each skip: 4, 3, 2 and 1 residual units (3x3 ``ConvBN`` plus 1x1
  ``ConvBN`` shortcut, added, ReLU, BatchNorm) with ``U_i`` filters, from the shallowest skip
  to the deepest;
- decoder stage: 2x2 stride-2 transposed convolution (with bias) to ``U_i`` filters,
  concatenation ``[upsampled, skip]``, MultiResBlock;
- head: a 1x1 convolution to ``num_classes`` logits.

Choices where we depart from the Keras code:

- every BatchNorm has a learnable scale; Keras ``conv2d_bn`` uses ``scale=False`` (shift only),
  which a following ReLU or addition makes nearly redundant;
- the head is a 1x1 convolution with bias returning logits; Keras uses a bias-free 1x1
  convolution, a shift-only BatchNorm and a sigmoid for its single output.

Parameter count check. Counted as Keras counts (parameters plus the BatchNorm moving mean and
variance), for 3 input channels and 1 output, the Keras code gives the paper's 7,262,750.
Our model with those settings has 7,244,774 parameters and 24,520 BatchNorm running
statistics; less the 6,546 scales of the ``ConvBN`` BatchNorms that Keras omits, plus the
moving mean and variance of the Keras head's BatchNorm (2), that is exactly 7,262,750: the
layers match the paper's model one to one (checked in ``Testing/test_networks.py``). With 1
input channel and 3 classes (our default): 7,244,632 trainable parameters.

Args:
    in_channels: number of input channels (adjacent slices). Default 1.
    num_classes: number of output classes. Default 3.
    base_filters: U, the filters of the first U-Net stage the blocks stand in for. Default 32.
    alpha: width multiplier of the MultiRes blocks. Default 1.67.

``forward`` returns raw logits ``(B, num_classes, H, W)``; ``H`` and ``W`` must be divisible
by 16.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .common import check_slice_batch

#: Residual units of the Res paths, from the full-resolution skip to the 1/8 one.
RES_PATH_LENGTHS = (4, 3, 2, 1)


def multires_widths(filters: int, alpha: float) -> tuple[int, int, int]:
    """Filters of the three chained 3x3 convolutions, rounded down as in the Keras code."""
    width = alpha * filters
    return int(width * 0.167), int(width * 0.333), int(width * 0.5)


class ConvBN(nn.Sequential):
    """Bias-free convolution ('same' padding) and BatchNorm, then ReLU if ``activation``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, activation: bool = True
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class MultiResBlock(nn.Module):
    """Three chained 3x3 ConvBNs, concatenated, plus a 1x1 shortcut; size kept."""

    def __init__(self, in_channels: int, filters: int, alpha: float = 1.67) -> None:
        super().__init__()
        widths = multires_widths(filters, alpha)
        self.out_channels = sum(widths)
        self.shortcut = ConvBN(in_channels, self.out_channels, 1, activation=False)
        self.conv1 = ConvBN(in_channels, widths[0], 3)
        self.conv2 = ConvBN(widths[0], widths[1], 3)
        self.conv3 = ConvBN(widths[1], widths[2], 3)
        self.concat_norm = nn.BatchNorm2d(self.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.out_norm = nn.BatchNorm2d(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)  # receptive field 3x3
        b = self.conv2(a)  # 5x5
        c = self.conv3(b)  # 7x7
        y = self.concat_norm(torch.cat([a, b, c], dim=1)) + self.shortcut(x)
        return self.out_norm(self.relu(y))  # (B, out_channels, H, W)


class ResPathUnit(nn.Module):
    """3x3 ConvBN plus a 1x1 ConvBN shortcut, added, then ReLU and BatchNorm."""

    def __init__(self, in_channels: int, filters: int) -> None:
        super().__init__()
        self.shortcut = ConvBN(in_channels, filters, 1, activation=False)
        self.conv = ConvBN(in_channels, filters, 3)
        self.relu = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm2d(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.relu(self.conv(x) + self.shortcut(x)))


class ResPath(nn.Sequential):
    """``length`` residual units on a skip connection, narrowing it to ``filters`` channels."""

    def __init__(self, in_channels: int, filters: int, length: int) -> None:
        super().__init__(
            *(ResPathUnit(in_channels if i == 0 else filters, filters) for i in range(length))
        )


class MultiResUp(nn.Module):
    """2x2 stride-2 transposed convolution, concatenation ``[upsampled, skip]``, then a block."""

    def __init__(self, in_channels: int, filters: int, block: nn.Module) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, filters, kernel_size=2, stride=2)
        self.block = block

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample(x)  # (B, U_i, 2h, 2w); the Res path narrowed the skip to U_i too
        return self.block(torch.cat([x, skip], dim=1))  # (B, block width, 2h, 2w)


class MultiResStyleUNet(nn.Module):
    """Five-level U-Net whose stages are ``make_block`` blocks and whose skips are Res paths.

    Shared by :class:`MultiResUNet` and DCUNet, which differ only in the block;
    ``make_block(in_channels, U_i)`` must return a module with an ``out_channels`` attribute.
    """

    #: Default Grad-CAM target: the second decoder stage, at 1/4 of the input resolution.
    gradcam_layer: str = "decoder.1"
    size_divisor: int = 16

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_filters: int,
        make_block: Callable[[int, int], nn.Module],
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or base_filters < 1:
            raise ValueError(
                "in_channels, num_classes and base_filters must be >= 1, got "
                f"{in_channels}, {num_classes}, {base_filters}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.base_filters = base_filters
        filters = [base_filters * 2**level for level in range(5)]  # U, 2U, 4U, 8U, 16U
        self.encoder, self.res_paths = nn.ModuleList(), nn.ModuleList()
        channels = in_channels
        for level, u in enumerate(filters):
            self.encoder.append(make_block(channels, u))
            channels = self.encoder[-1].out_channels
            if level < len(RES_PATH_LENGTHS):
                self.res_paths.append(ResPath(channels, u, RES_PATH_LENGTHS[level]))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.decoder = nn.ModuleList()
        for u in reversed(filters[:-1]):  # 8U, 4U, 2U, U
            self.decoder.append(MultiResUp(channels, u, make_block(2 * u, u)))
            channels = self.decoder[-1].block.out_channels
        self.head = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` slices to ``(B, num_classes, H, W)`` logits.

        No softmax is applied here. ``H`` and ``W`` must be divisible by ``size_divisor``.
        """
        check_slice_batch(x, self.size_divisor, type(self).__name__)
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = self.pool(x)  # (B, C, h/2, w/2)
            x = block(x)  # level i at H/2**i; the last (16U) is the bottleneck at H/16
            if level < len(self.res_paths):
                skips.append(self.res_paths[level](x))  # (B, U_i, H/2**i, W/2**i)
        for up in self.decoder:
            x = up(x, skips.pop())  # back up one level
        return self.head(x)  # (B, num_classes, H, W)


class MultiResUNet(MultiResStyleUNet):
    """MultiResUNet returning per-pixel logits; see the module docstring for the arguments."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        base_filters: int = 32,
        alpha: float = 1.67,
    ) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        super().__init__(
            in_channels,
            num_classes,
            base_filters,
            lambda c_in, u: MultiResBlock(c_in, u, alpha),
        )
        self.alpha = alpha
