"""Per-voxel uncertainty from test-time augmentation or Monte Carlo dropout.

The network sees each slice again under small changes that should not change the answer
(a shift of a few pixels; a left-right flip on request) — or, for models with dropout, with
dropout left on. The default is one shift: our models are trained without flips because the
liver lies on the patient's right, so a flipped abdomen is outside what they have seen and
would show up as uncertainty everywhere.
The class probabilities of all passes, the unchanged one included, are averaged and the
predictive entropy of that average, divided by ``log(classes)``, is the uncertainty in [0, 1]:
0 when every pass agrees with full confidence, 1 when the classes are equally likely.

Only slices where some pixel has a foreground probability of at least
``CANDIDATE_PROBABILITY`` in the unchanged pass get the extra passes; elsewhere the network
is confidently background and the entropy of the single pass is used, which keeps the cost
to the slices that hold (or nearly hold) liver.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

CANDIDATE_PROBABILITY = 0.05
TTA_AUGMENTATIONS = ("flip", "shift")
SHIFT_FRACTION = 1 / 32  # 4 pixels at 128 x 128


def _flip(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=(-1,))


def _shift_by(x: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    return torch.roll(x, shifts=(rows, columns), dims=(-2, -1))


def augmentation_pairs(
    names: Sequence[str], size: tuple[int, int]
) -> list[tuple[Callable, Callable]]:
    """(transform, inverse) pairs for the named augmentations on (B, C, H, W) tensors."""
    pairs = []
    for name in names:
        if name == "flip":
            pairs.append((_flip, _flip))
        elif name == "shift":
            rows, columns = (max(1, round(s * SHIFT_FRACTION)) for s in size)
            pairs.append(
                (
                    lambda x, r=rows, c=columns: _shift_by(x, r, c),
                    lambda x, r=rows, c=columns: _shift_by(x, -r, -c),
                )
            )
        else:
            raise ValueError(f"unknown augmentation {name!r}; choose from {TTA_AUGMENTATIONS}")
    return pairs


def normalized_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy over dim 1 of (B, C, H, W) probabilities divided by log(C): (B, H, W) in [0, 1]."""
    classes = probabilities.shape[1]
    p = probabilities.float().clamp_min(1e-8)
    return (-(p * p.log()).sum(dim=1) / math.log(classes)).clamp(0.0, 1.0)


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


@dataclass(frozen=True)
class UncertaintySpec:
    """How to estimate uncertainty: ``tta`` with ``augmentations`` or ``mc-dropout`` ``passes``."""

    method: str = "tta"
    augmentations: tuple[str, ...] = ("shift",)
    passes: int = 4

    @classmethod
    def from_name(cls, name: str) -> UncertaintySpec | None:
        """The default spec for ``tta`` or ``mc-dropout``; ``None`` for ``none``."""
        if name == "none":
            return None
        if name not in ("tta", "mc-dropout"):
            raise ValueError(f"unknown uncertainty {name!r}: use tta, mc-dropout or none")
        return cls(name)

    def describe(self) -> str:
        if self.method == "mc-dropout":
            return f"Monte Carlo dropout, {self.passes} passes with dropout on"
        return "test-time augmentation: " + ", ".join(("original", *self.augmentations))


def check_uncertainty(spec: UncertaintySpec, model: nn.Module) -> None:
    """Raise ``ValueError`` naming what does not fit (unknown method, no dropout, ...)."""
    if spec.method == "tta":
        augmentation_pairs(spec.augmentations, (128, 128))
    elif spec.method == "mc-dropout":
        if not has_dropout(model):
            raise ValueError(
                f"{type(model).__name__} has no dropout layer: use test-time augmentation"
            )
        if spec.passes < 2:
            raise ValueError("Monte Carlo dropout needs at least 2 passes")
    else:
        raise ValueError(f"unknown uncertainty method {spec.method!r}: use tta or mc-dropout")


def averaged_probabilities(
    model: nn.Module, inputs: torch.Tensor, probabilities: torch.Tensor, spec: UncertaintySpec
) -> torch.Tensor:
    """Mean class probabilities over the unchanged pass (``probabilities``) and the extra
    passes of ``spec``, for the candidate slices only (see the module docstring)."""
    foreground = probabilities[:, 1:].amax(dim=(1, 2, 3))
    rows = (foreground >= CANDIDATE_PROBABILITY).nonzero()[:, 0]
    if rows.numel() == 0:
        return probabilities
    chosen = inputs[rows]
    total = probabilities[rows].float().clone()
    count = 1
    with torch.inference_mode():
        if spec.method == "mc-dropout":
            dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
            try:
                for module in dropouts:
                    module.train()
                for _ in range(spec.passes - 1):
                    total += torch.softmax(model(chosen).float(), dim=1)
                    count += 1
            finally:
                for module in dropouts:
                    module.eval()
        else:
            for transform, inverse in augmentation_pairs(spec.augmentations, inputs.shape[-2:]):
                total += inverse(torch.softmax(model(transform(chosen)).float(), dim=1))
                count += 1
    averaged = probabilities.float().clone()
    averaged[rows] = total / count
    return averaged
