"""Training-time augmentation of slices with MONAI transforms, each switchable by name.

The source papers augment with flips, rotations, zoom and noise. Here:

- ``rotate`` — rotation by up to ±15° (bilinear image, nearest labels);
- ``flip`` — left-right flip. Off by default: the liver lies on one side of the body, so a
  flipped slice shows an anatomy the network never meets in practice (the papers flip);
- ``zoom`` — zoom 0.85–1.15 with the slice size kept, i.e. a random crop when zooming in;
- ``noise`` — Gaussian noise, σ = 0.02 of the window;
- ``intensity`` — intensity shift (±0.05) and scale (±10 %), i.e. a different HU window;
- ``contrast`` — a stronger shift (±0.15 of the window, ±75 HU) and scale (±25 %): the
  difference in enhancement between contrast phases and scanners (off by default);
- ``gamma`` — gamma 0.7–1.5 on the windowed slice: a non-linear change of the contrast
  between liver, lesion and fat (off by default);
- ``lesion`` — the tumour's contrast against the liver around it redrawn, hypo- or hyperdense
  by 15–60 HU (:mod:`lesion_contrast`; off by default).

Each is applied with probability 0.5 per slice; values are clipped to [0, 1] afterwards,
the range of the HU-windowed input that inference feeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

AUGMENTATIONS = ("rotate", "flip", "zoom", "noise", "intensity", "contrast", "gamma", "lesion")
DEFAULT_AUGMENTATIONS = ("rotate", "zoom", "noise", "intensity")


def parse_augmentations(text: str) -> tuple[str, ...]:
    """``"rotate,zoom"`` → ``("rotate", "zoom")``; ``"none"`` or ``""`` → ``()``.

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    if text.strip().lower() in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)} "
            "or none"
        )
    return names


def _clip_unit(values: torch.Tensor) -> torch.Tensor:
    return values.clamp(0.0, 1.0)


def _spatial_transforms(names: tuple[str, ...]) -> list:
    """Rotation, flip and zoom of image and label together (labels nearest-neighbour)."""
    from monai.transforms import RandFlipd, RandRotated, RandZoomd

    keys, modes = ("image", "label"), ("bilinear", "nearest")
    transforms = []
    if "rotate" in names:
        transforms.append(
            RandRotated(keys, range_x=math.radians(15), prob=0.5, mode=modes, padding_mode="zeros")
        )
    if "flip" in names:
        transforms.append(RandFlipd(keys, prob=0.5, spatial_axis=1))
    if "zoom" in names:
        transforms.append(
            RandZoomd(
                keys,
                prob=0.5,
                min_zoom=0.85,
                max_zoom=1.15,
                mode=modes,
                padding_mode="constant",
                keep_size=True,
            )
        )
    return transforms


def _intensity_transforms(names: tuple[str, ...]) -> list:
    """Noise, window shift/scale and gamma of the image alone."""
    from monai.transforms import (
        Lambdad,
        RandAdjustContrastd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    transforms = []
    if "noise" in names:
        transforms.append(RandGaussianNoised("image", prob=0.5, mean=0.0, std=0.02))
    if "intensity" in names:
        transforms.append(RandShiftIntensityd("image", offsets=0.05, prob=0.5))
        transforms.append(RandScaleIntensityd("image", factors=0.1, prob=0.5))
    if "contrast" in names:
        transforms.append(RandShiftIntensityd("image", offsets=0.15, prob=0.5))
        transforms.append(RandScaleIntensityd("image", factors=0.25, prob=0.5))
    if "gamma" in names:
        transforms.append(Lambdad("image", _clip_unit))
        transforms.append(RandAdjustContrastd("image", prob=0.5, gamma=(0.7, 1.5)))
    return transforms


def build_augmentation(names: Iterable[str], seed: int = 0):
    """A MONAI ``Compose`` over ``{"image": (C, H, W), "label": (1, H, W)}`` dictionaries.

    Returns ``None`` when ``names`` is empty. MONAI's metadata tracking is switched off for
    the process (plain tensors are twice as fast; training runs in its own process).
    """
    from monai.data import set_track_meta
    from monai.transforms import Compose, Lambdad

    names = tuple(names)
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}")
    transforms = _spatial_transforms(names)
    if "lesion" in names:  # after the label has moved with the image, before global intensity
        from .lesion_contrast import RandLesionContrastd

        transforms.append(RandLesionContrastd(prob=0.5))
    transforms += _intensity_transforms(names)
    if not transforms:
        return None
    set_track_meta(False)
    transforms.append(Lambdad("image", _clip_unit))
    compose = Compose(transforms)
    compose.set_random_state(seed=seed)
    return compose


def augment_slice(transform, image: torch.Tensor, label: torch.Tensor):
    """Apply a :func:`build_augmentation` transform to one slice (C, H, W) and label (H, W)."""
    if transform is None:
        return image, label
    out = transform({"image": image, "label": label[None].float()})
    image, label = (getattr(v, "as_tensor", lambda v=v: v)() for v in (out["image"], out["label"]))
    return image.float().contiguous(), label[0].round().long().contiguous()
