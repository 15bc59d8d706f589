"""TransUNet: a CNN-Transformer hybrid encoder with a cascaded upsampler, for CT slices.

Chen, Lu, Yu, Luo, Wang, Lu, Yuille and Zhou, "TransUNet: Transformers Make Strong Encoders
for Medical Image Segmentation", arXiv:2102.04306, 2021. The layers follow the authors'
PyTorch code (github.com/Beckschen/TransUNet) where the paper leaves details open.

Architecture (input ``H x W``):

- CNN encoder (:class:`ResNetV2Encoder`), a ResNet-50 v2 cut after its third stage as in the
  paper's R50-ViT hybrid: a 7x7 stride-2 root convolution (skip at ``H/2``), a 3x3 stride-2
  max-pool, then three stages of bottleneck units (skips at ``H/4`` and ``H/8``; output at
  ``H/16``). Convolutions are weight-standardised and followed by GroupNorm, as in BiT-R50;
- patch embedding: a 1x1 convolution of the ``H/16`` feature map (1x1 patches), one token per
  position, plus a learnable position embedding and dropout;
- transformer encoder: pre-norm layers (LayerNorm, multi-head self-attention, residual;
  LayerNorm, MLP with GELU, residual) and a final LayerNorm; the tokens are reshaped back to a
  ``(hidden, H/16, W/16)`` map;
- cascaded upsampler (CUP, :class:`CascadedUpsampler`): a 3x3 conv-BN-ReLU to
  ``head_channels``, then four stages of 2x bilinear up-sampling, concatenation with the CNN
  skip at ``H/8``, ``H/4``, ``H/2`` (none at ``H``), and two 3x3 conv-BN-ReLU;
- segmentation head: a 3x3 convolution to ``num_classes`` logits.

Variants (``variant``):

- ``"paper"``: R50 (width 64, 3/4/9 units) + ViT-B (12 layers, hidden 768, 12 heads, MLP
  3072), head channels 512, decoder channels (256, 128, 64, 16). With 3 input channels, 9
  classes and ``image_size=224`` it has 105,277,081 parameters, which rounds to the 105.28M
  reported for TransUNet in later comparisons (the paper itself gives no count); with 1
  channel, 3 classes and ``image_size=128`` it has 105,168,563 parameters.
- ``"small"`` (default): a light R50-style encoder (width 16, 1/2/2 units) + 4 layers, hidden
  256, 8 heads, MLP 512, head channels 128, decoder channels (128, 64, 32, 16): 3,330,275
  parameters, cheap enough to train on a laptop CPU.

No pretrained weights (ImageNet R50, ImageNet-21k R50-ViT-B/16) are available here, so the
model is trained from scratch; the paper's ablations show that this hurts, most on small
data sets.

Choices where the paper (or its code) is vague:

- ``in_channels`` enter the root convolution directly (the code repeats a grey channel 3
  times to reuse the ImageNet root filters, which we do not have);
- the max-pool has padding 1, so every ``H`` divisible by 16 gives exact ``H/4``, ``H/8``
  and ``H/16`` maps (the code pads with zeros when the sizes drift);
- GroupNorm has 32 groups, or ``gcd(32, channels)`` where the small variant has fewer
  channels; the projection shortcut's GroupNorm has one group per channel as in the code;
- the position embedding is initialised from a truncated normal (std 0.02, as in ViT) rather
  than zeros (the code's placeholder before loading pretrained weights); it is sized for
  ``image_size`` and bilinearly interpolated at run time for any other input size, so a
  model trained at 128x128 runs at 256x256;
- dropout 0.1 on the embeddings and in the MLPs, none on the attention weights (the code's
  ViT-B/16 configuration), for both variants.

Args:
    in_channels: number of input channels (adjacent slices). Default 1.
    num_classes: number of output classes. Default 3.
    variant: ``"small"`` (default) or ``"paper"``, see above.
    image_size: input side the position embedding is sized for (a multiple of 16).
        Default 128.
    dropout: dropout probability of the embeddings and MLPs. Default 0.1.

``forward`` returns raw logits ``(B, num_classes, H, W)``; ``H`` and ``W`` must be divisible
by 16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_slice_batch


@dataclass(frozen=True)
class TransUNetConfig:
    """Sizes of one TransUNet variant."""

    width: int  # root filters of the CNN encoder
    units: tuple[int, int, int]  # bottleneck units per CNN stage
    hidden: int  # token width
    layers: int  # transformer layers
    heads: int  # attention heads
    mlp: int  # MLP hidden width
    head_channels: int  # CUP's first convolution
    decoder_channels: tuple[int, int, int, int]


VARIANTS: dict[str, TransUNetConfig] = {
    "paper": TransUNetConfig(64, (3, 4, 9), 768, 12, 12, 3072, 512, (256, 128, 64, 16)),
    "small": TransUNetConfig(16, (1, 2, 2), 256, 4, 8, 512, 128, (128, 64, 32, 16)),
}


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with ``gcd(groups, channels)`` groups and BiT's epsilon."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


class StdConv2d(nn.Conv2d):
    """Convolution with weight standardisation (zero mean, unit variance per filter)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(variance + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Bottleneck(nn.Module):
    """ResNet v2 (BiT) bottleneck unit as in TransUNet's code: 1x1, 3x3 (stride), 1x1."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = StdConv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.gn1 = group_norm(mid_channels)
        self.conv2 = StdConv2d(
            mid_channels, mid_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.gn2 = group_norm(mid_channels)
        self.conv3 = StdConv2d(mid_channels, out_channels, kernel_size=1, bias=False)
        self.gn3 = group_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                StdConv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.GroupNorm(out_channels, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.downsample(x)
        y = self.relu(self.gn1(self.conv1(x)))
        y = self.relu(self.gn2(self.conv2(y)))  # (B, mid, H/stride, W/stride)
        return self.relu(self.gn3(self.conv3(y)) + residual)


class ResNetV2Encoder(nn.Module):
    """Root and three bottleneck stages; returns the H/16 map and the H/8, H/4, H/2 skips."""

    def __init__(self, in_channels: int, width: int, units: Sequence[int]) -> None:
        super().__init__()
        self.root = nn.Sequential(
            StdConv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False),
            group_norm(width),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        in_ch = width
        for i, count in enumerate(units):
            mid = width * 2**i
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(in_ch, 4 * mid, mid, stride)]
            stage += [Bottleneck(4 * mid, 4 * mid, mid) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            in_ch = 4 * mid
        self.stages = nn.ModuleList(stages)
        self.out_channels = in_ch
        self.skip_channels = (2 * in_ch // 4, in_ch // 4, width)  # H/8, H/4, H/2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.root(x)  # (B, width, H/2, W/2)
        skips = [x]
        x = self.pool(x)  # (B, width, H/4, W/4)
        for stage in self.stages[:-1]:
            x = stage(x)  # (B, 4 width, H/4, W/4), then (B, 8 width, H/8, W/8)
            skips.append(x)
        x = self.stages[-1](x)  # (B, 16 width, H/16, W/16)
        return x, skips[::-1]


class Attention(nn.Module):
    """Multi-head self-attention over tokens (B, N, D)."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D/heads)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(batch, tokens, hidden))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, hidden: int, heads: int, mlp: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.attention = Attention(hidden, heads)
        self.mlp_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp, hidden),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 bias-free convolution, BatchNorm and ReLU (TransUNet's ``Conv2dReLU``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    """2x bilinear up-sampling, concatenation with the skip (if any), two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv1 = conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_relu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.upsample(x)  # (B, C_in, 2h, 2w)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # (B, C_in + C_skip, 2h, 2w)
        return self.conv2(self.conv1(x))  # (B, C_out, 2h, 2w)


class CascadedUpsampler(nn.Module):
    """CUP: a conv-BN-ReLU, then four DecoderBlocks from H/16 to H with three skips."""

    def __init__(
        self, hidden: int, head_channels: int, channels: Sequence[int], skips: Sequence[int]
    ) -> None:
        super().__init__()
        self.conv_more = conv_bn_relu(hidden, head_channels)
        in_channels = [head_channels, *channels[:-1]]
        skip_channels = [*skips, 0]  # no skip at full resolution
        self.blocks = nn.ModuleList(
            DecoderBlock(c_in, c_skip, c_out)
            for c_in, c_skip, c_out in zip(in_channels, skip_channels, channels, strict=True)
        )

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.conv_more(x)  # (B, head_channels, H/16, W/16)
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)  # H/8, H/4, H/2, H
        return x


class TransUNet(nn.Module):
    """TransUNet returning per-pixel logits; see the module docstring for the arguments."""

    #: Default Grad-CAM target: the second CUP stage, at 1/4 of the input resolution.
    gradcam_layer: str = "decoder.blocks.1"
    size_divisor: int = 16

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        variant: str = "small",
        image_size: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown TransUNet variant {variant!r}; available: {', '.join(VARIANTS)}"
            )
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}"
            )
        if image_size < self.size_divisor or image_size % self.size_divisor:
            raise ValueError(f"image_size must be a positive multiple of 16, got {image_size}")
        config = VARIANTS[variant]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.variant = variant
        self.image_size = image_size
        self.grid_size = image_size // self.size_divisor

        self.encoder = ResNetV2Encoder(in_channels, config.width, config.units)
        self.patch_embedding = nn.Conv2d(self.encoder.out_channels, config.hidden, kernel_size=1)
        self.position_embedding = nn.Parameter(torch.zeros(1, self.grid_size**2, config.hidden))
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        self.embedding_dropout = nn.Dropout(dropout)
        self.transformer = nn.Sequential(
            *(
                TransformerLayer(config.hidden, config.heads, config.mlp, dropout)
                for _ in range(config.layers)
            )
        )
        self.transformer_norm = nn.LayerNorm(config.hidden, eps=1e-6)
        self.decoder = CascadedUpsampler(
            config.hidden,
            config.head_channels,
            config.decoder_channels,
            self.encoder.skip_channels,
        )
        self.head = nn.Conv2d(config.decoder_channels[-1], num_classes, kernel_size=3, padding=1)
        for module in self.transformer.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def position_embeddings(self, height: int, width: int) -> torch.Tensor:
        """Position embedding (1, height * width, hidden), interpolated if the grid differs."""
        embedding = self.position_embedding
        if (height, width) == (self.grid_size, self.grid_size):
            return embedding
        grid = embedding.reshape(1, self.grid_size, self.grid_size, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return grid.flatten(2).transpose(1, 2)  # (1, height * width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` slices to ``(B, num_classes, H, W)`` logits.

        No softmax is applied here. ``H`` and ``W`` must be divisible by ``size_divisor``.
        """
        check_slice_batch(x, self.size_divisor, type(self).__name__)
        features, skips = self.encoder(x)  # (B, C, H/16, W/16); skips at H/8, H/4, H/2
        tokens = self.patch_embedding(features)  # (B, hidden, h, w) with h, w = H/16, W/16
        h, w = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, h * w, hidden)
        tokens = self.embedding_dropout(tokens + self.position_embeddings(h, w))
        tokens = self.transformer_norm(self.transformer(tokens))
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)  # (B, hidden, h, w)
        return self.head(self.decoder(x, skips))  # (B, num_classes, H, W)
