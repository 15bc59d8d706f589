"""Explanations of a segmentation network: the methods, one batched API, and normalisation.

Methods (``METHODS``): Grad-CAM and Grad-CAM++ on a selectable layer (:mod:`cam`; by default
the layer measured best for the architecture, :func:`default_cam_layer`), and Integrated
Gradients (:mod:`integrated_gradients`). Each explains, for every slice of a batch, the scalar
of :mod:`segmentation_target` for that slice's own target class over the given labels (the
product gives the labels after the 3D clean-up), and returns maps (B, H, W) at the requested
slice size. Maps come out unnormalised; a whole volume is scaled once
(:func:`normalize_volume`, by default relative to the map inside the explained region) so that
slices stay comparable, and each method names its normalisation. Each method also carries the
outcome of the sanity checks of Adebayo et al. (2018) as the test suite measures them
(``Testing/test_sanity_checks.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.networks import gradcam_layer
from .cam import CAM_VARIANTS, DEFAULT_WEIGHTING, LayerCAM
from .targets import as_targets

HeatmapNormalization = Literal["region-p99", "volume-max", "volume-p99.5", "none"]
NORMALIZATION_DESCRIPTIONS = {
    "region-p99": "scaled once per volume: 1 = the 99th percentile of the map inside the "
    "explained region (the class as predicted after the 3D clean-up), higher values shown as 1; "
    "0 = no attention. No single slice sets the scale, and a class that is not predicted has "
    "an empty map.",
    "volume-max": "scaled once per volume: 1 = the strongest attention anywhere in the volume, "
    "0 = none; slices are comparable.",
    "volume-p99.5": "scaled once per volume by the 99.5th percentile of its positive values and "
    "clipped to 1, so a few extreme pixels do not darken the rest; slices are comparable.",
    "none": "raw values, not scaled.",
}
REGION_PERCENTILE = 99.0
WEIGHTING_DESCRIPTIONS = {
    "channel-mean": "each channel weighted by its gradient averaged over the slice (as published)",
    "element-wise": "each pixel's channels weighted by the gradient at that pixel (HiResCAM); "
    "fails the model-randomisation check",
}


@dataclass(frozen=True)
class MethodInfo:
    """What a user needs to know about an attribution method."""

    name: str
    label: str
    normalization: HeatmapNormalization
    uses_layer: bool
    sanity: str  # outcome of the Adebayo et al. checks, "passed ..." or "FAILS ..."

    def to_dict(self, layer: str | None = None, weighting: str = DEFAULT_WEIGHTING) -> dict:
        return {
            "label": self.label,
            "normalization": NORMALIZATION_DESCRIPTIONS[self.normalization],
            "layer": layer if self.uses_layer else None,
            "weighting": WEIGHTING_DESCRIPTIONS[weighting] if self.uses_layer else None,
            "sanity": self.sanity,
        }


METHODS: dict[str, MethodInfo] = {
    "gradcam": MethodInfo(
        "gradcam",
        "Grad-CAM",
        "region-p99",
        True,
        "passed on the demo U-Net (layer decoder.2): maps decorrelate as layers are randomised "
        "from the top (|rho| 0.54 to 0.26, mean of three draws) and differ from a model trained "
        "on permuted labels (|rho| 0.06)",
    ),
    "gradcam++": MethodInfo(
        "gradcam++",
        "Grad-CAM++",
        "region-p99",
        True,
        "passed on the demo U-Net (layer decoder.2): maps decorrelate as layers are randomised "
        "from the top (|rho| 0.52 to 0.08, mean of three draws) and differ from a model trained "
        "on permuted labels (|rho| 0.02)",
    ),
    "integrated-gradients": MethodInfo(
        "integrated-gradients",
        "Integrated Gradients",
        "region-p99",
        False,
        "FAILS model randomisation: with every layer of the demo U-Net re-initialised its maps "
        "still rank-correlate |rho| = 0.29 on average (0.52 for one of three draws) with the "
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


def _half_resolution_decoder_stage(model: nn.Module) -> str:
    """The U-Net's decoder stage at 1/2 of the input resolution (``decoder.2`` by default)."""
    return f"decoder.{len(model.decoder) - 2}"


MEASURED_CAM_LAYERS: dict[str, Callable[[nn.Module], str]] = {
    "UNet": _half_resolution_decoder_stage,
}
"""Default CAM layer per architecture (class name), chosen by measured localisation, mass
outside the body, sanity checks and deletion/insertion on real CT (``docs/explanations.md``,
``bench/explanation_targets.py``). Architectures not listed keep their declared
``gradcam_layer``: no trained weights to measure them on."""


def default_cam_layer(model: nn.Module) -> str | None:
    """The CAM layer used when none is named: the layer measured for these weights (the
    checkpoint's ``cam_layer``, kept on the model as ``measured_cam_layer``), else the measured
    choice for the model's architecture (``MEASURED_CAM_LAYERS``), else the model's own
    ``gradcam_layer``."""
    measured = getattr(model, "measured_cam_layer", None)
    if isinstance(measured, str) and measured:
        return measured
    choose = MEASURED_CAM_LAYERS.get(type(model).__name__)
    if choose is not None:
        return choose(model)
    layer = getattr(model, "gradcam_layer", None)
    return layer if isinstance(layer, str) and layer else None


def cam_layer(model: nn.Module, name: str | None = None) -> nn.Module:
    """The module a CAM method hooks: ``name`` or :func:`default_cam_layer`."""
    return gradcam_layer(model, name or default_cam_layer(model))


def layer_choices(model: nn.Module) -> list[str]:
    """Layer names for CAM methods: the model's default first, then every convolution."""
    default = default_cam_layer(model)
    names = [default] if default else []
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
    labels: torch.Tensor | None = None,
    weighting: str = DEFAULT_WEIGHTING,
    **options,
) -> torch.Tensor:
    """Unnormalised maps (B, *output_size) explaining each slice's own ``target`` class.

    ``inputs`` is a network batch (B, channels, H, W); ``target`` an int for all slices or one
    class per slice; ``labels`` (B, H, W) the labels whose pixels of the target class are
    explained (default: the network's argmax); ``layer`` names the CAM target layer (default:
    :func:`default_cam_layer`) and ``weighting`` the CAM weighting (:mod:`cam`); ``options``
    go to Integrated Gradients (``steps``, ``baseline``, ``internal_batch_size``).
    """
    check_methods([method])
    targets = [as_targets(target, inputs.shape[0])]
    if method in CAM_VARIANTS:
        cam = LayerCAM(model, cam_layer(model, layer), (method,), weighting)
        result = cam.explain(inputs, targets, labels)[1][method][0]
    else:
        from .integrated_gradients import IntegratedGradientsExplainer

        explainer = IntegratedGradientsExplainer(model, hu_window, **options)
        result = explainer.explain(inputs, targets, labels)[0]
    size = output_size or tuple(inputs.shape[-2:])
    return resize_maps(result, size)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, H, W) maps to ``size``, kept non-negative."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    resized = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
    return resized[:, 0].clamp_min(0)


def normalize_volume(
    heatmap: np.ndarray,
    normalization: HeatmapNormalization,
    region: np.ndarray | None = None,
) -> np.ndarray:
    """Scale a whole heatmap volume in place to [0, 1] (see ``NORMALIZATION_DESCRIPTIONS``);
    ``region`` (boolean, the heatmap's shape) is the explained region ``region-p99`` needs."""
    if normalization == "none":
        return heatmap
    if normalization == "region-p99":
        scale = _region_percentile(heatmap, region)
    elif normalization == "volume-max":
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


def _region_percentile(heatmap: np.ndarray, region: np.ndarray | None) -> float:
    """The map's 99th percentile over the region's voxels (its maximum there if that is 0,
    the volume's if the region holds no attention). With an empty region the map is cleared:
    nothing was explained, so nothing may look explained."""
    if region is None or region.shape != heatmap.shape:
        raise ValueError("region-p99 needs the explained region, shaped like the heatmap")
    values = heatmap[region]
    if values.size == 0:
        heatmap[...] = 0.0
        return 0.0
    scale = float(np.percentile(values, REGION_PERCENTILE))
    if scale <= 0:
        scale = float(values.max()) or float(heatmap.max())
    return scale
