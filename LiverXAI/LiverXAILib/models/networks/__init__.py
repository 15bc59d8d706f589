"""Network registry: one constructor per architecture name, one entry point to build them.

Each architecture lives in its own file named after its paper and declares the dotted name of
its default Grad-CAM target in a ``gradcam_layer`` attribute. Adding an architecture (VU-Net,
residual U-Net, MultiResUNet, DCUNet, TransUNet, ...) means adding its file and one line to
:data:`MODEL_BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .dcunet import DCUNet
from .multiresunet import MultiResUNet
from .resunet import ResUNet
from .transunet import TransUNet
from .unet import UNet
from .vunet import VUNet

MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "vunet": VUNet,
    "resunet": ResUNet,
    "multiresunet": MultiResUNet,
    "dcunet": DCUNet,
    "transunet": TransUNet,
}

__all__ = [
    "MODEL_BUILDERS",
    "DCUNet",
    "MultiResUNet",
    "ResUNet",
    "TransUNet",
    "UNet",
    "VUNet",
    "available_models",
    "build_model",
    "count_parameters",
    "gradcam_layer",
]


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(MODEL_BUILDERS)


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the architecture registered as ``name`` (case-insensitive) with ``kwargs``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the available names.
    """
    builder = MODEL_BUILDERS.get(name.strip().lower())
    if builder is None:
        raise ValueError(
            f"Unknown network architecture {name!r}; available: {', '.join(available_models())}"
        )
    return builder(**kwargs)


def gradcam_layer(model: nn.Module, name: str | None = None) -> nn.Module:
    """Return the submodule Grad-CAM hooks: ``name`` or, by default, ``model.gradcam_layer``.

    ``name`` is a dotted module name as listed by ``model.named_modules()``.

    Raises:
        ValueError: no name given and the model declares none, or no submodule has that name.
    """
    layer_name = name if name is not None else getattr(model, "gradcam_layer", None)
    if not isinstance(layer_name, str) or not layer_name:
        raise ValueError(
            f"{type(model).__name__} declares no default Grad-CAM layer; pass a layer name"
        )
    modules = dict(model.named_modules())
    layer = modules.get(layer_name)
    if layer is None:
        top_level = ", ".join(child for child, _ in model.named_children())
        raise ValueError(
            f"{type(model).__name__} has no submodule {layer_name!r} for Grad-CAM "
            f"(top-level modules: {top_level})"
        )
    return layer


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
