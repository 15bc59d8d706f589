"""Explanations of a segmentation network: the methods, one batched API, and normalisation.

Methods (``METHODS``): Grad-CAM and Grad-CAM++ on a selectable layer (:mod:`cam`), and
Integrated Gradients (:mod:`integrated_gradients`). Each explains, for every slice of a batch,
the scalar of :mod:`segmentation_target` for that slice's own target class, and returns maps
(B, H, W) at the requested slice size. Maps come out unnormalised; a whole volume is scaled
once (:func:`normalize_volume`) so that slices stay comparable, and each method names its
normalisation. Each method also carries the outcome of the sanity checks of Adebayo et al.
(2018) as the test suite measures them (``Testing/test_sanity_checks.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cam import CAM_VARIANTS, LayerCAM
from .networks import gradcam_layer
from .segmentation_target import as_targets

HeatmapNormalization = Literal["volume-max", "volume-p99.5", "none"]
NORMALIZATION_DESCRIPTIONS = {
    "volume-max": "scaled once per volume: 1 = the strongest attention anywhere in the volume, "
    "0 = none; slices are comparable.",
    "volume-p99.5": "scaled once per volume by the 99.5th percentile of its positive values and "
    "clipped to 1, so a few extreme pixels do not darken the rest; slices are comparable.",
    "none": "raw values, not scaled.",
}


@dataclass(frozen=True)
class MethodInfo:
    """What a user needs to know about an attribution method."""

    name: str
    label: str
    normalization: HeatmapNormalization
    uses_layer: bool
    sanity: str  # outcome of the Adebayo et al. checks, "passed ..." or "FAILS ..."

    def to_dict(self, layer: str | None = None) -> dict:
        return {
            "label": self.label,
            "normalization": NORMALIZATION_DESCRIPTIONS[self.normalization],
            "layer": layer if self.uses_layer else None,
            "sanity": self.sanity,
        }


METHODS: dict[str, MethodInfo] = {
    "gradcam": MethodInfo(
        "gradcam",
        "Grad-CAM",
        "volume-max",
        True,
        "passed on the demo U-Net: maps decorrelate as layers are randomised from the top "
        "(|rho| to 0.06) and differ from a model trained on permuted labels (|rho| 0.12)",
    ),
    "gradcam++": MethodInfo(
        "gradcam++",
        "Grad-CAM++",
        "volume-max",
        True,
        "passed on the demo U-Net: maps decorrelate as layers are randomised from the top "
        "(|rho| to 0.06) and differ from a model trained on permuted labels (|rho| 0.12)",
    ),
    "integrated-gradients": MethodInfo(
        "integrated-gradients",
        "Integrated Gradients",
        "volume-p99.5",
        False,
        "FAILS model randomisation: with every layer of the demo U-Net re-initialised its maps "
        "still rank-correlate |rho| = 0.3 on average (0.52 for one of three draws) with the "
        "trained model's; they follow the image's structure as much as the model, as Adebayo "
        "et al. found for gradient-times-input methods. Read them with Grad-CAM beside them.",
    ),
}
DEFAULT_METHODS: tuple[str, ...] = ("gradcam",)


def check_methods(methods: Sequence[str]) -> list[str]:
    """The methods as a list, each known, no repeats; raises ``ValueError`` naming the unknown."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown explanation method(s) {unknown}: choose from {list(METHODS)}")
    return list(dict.fromkeys(methods))


def layer_choices(model: nn.Module) -> list[str]:
    """Layer names for CAM methods: the model's default first, then every convolution."""
    default = getattr(model, "gradcam_layer", None)
    names = [default] if isinstance(default, str) else []
    names += [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and name not in names
    ]
    return names


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    method: str = "gradcam",
    layer: str | None = None,
    output_size: tuple[int, int] | None = None,
    hu_window: tuple[float, float] = (-200.0, 300.0),
    **options,
) -> torch.Tensor:
    """Unnormalised maps (B, *output_size) explaining each slice's own ``target`` class.

    ``inputs`` is a network batch (B, channels, H, W); ``target`` an int for all slices or one
    class per slice; ``layer`` names the CAM target layer (default: the model's);
    ``options`` go to Integrated Gradients (``steps``, ``baseline``, ``internal_batch_size``).
    """
    check_methods([method])
    targets = [as_targets(target, inputs.shape[0])]
    if method in CAM_VARIANTS:
        _, maps = LayerCAM(model, gradcam_layer(model, layer), (method,)).explain(inputs, targets)
        result = maps[method][0]
    else:
        from .integrated_gradients import IntegratedGradientsExplainer

        result = IntegratedGradientsExplainer(model, hu_window, **options).explain(inputs, targets)[
            0
        ]
    size = output_size or tuple(inputs.shape[-2:])
    return resize_maps(result, size)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, H, W) maps to ``size``, kept non-negative."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    resized = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
    return resized[:, 0].clamp_min(0)


def normalize_volume(heatmap: np.ndarray, normalization: HeatmapNormalization) -> np.ndarray:
    """Scale a whole heatmap volume in place to [0, 1] (see ``NORMALIZATION_DESCRIPTIONS``)."""
    if normalization == "none":
        return heatmap
    if normalization == "volume-max":
        scale = float(heatmap.max()) if heatmap.size else 0.0
    elif normalization == "volume-p99.5":
        sample = heatmap.reshape(-1)[:: max(1, heatmap.size // 2_000_000)]
        positive = sample[sample > 0]
        scale = float(np.percentile(positive, 99.5)) if positive.size else 0.0
    else:
        raise ValueError(f"unknown heatmap normalisation {normalization!r}")
    if scale > 0:
        heatmap *= np.float32(1.0 / scale)
        np.minimum(heatmap, 1.0, out=heatmap)
    return heatmap
