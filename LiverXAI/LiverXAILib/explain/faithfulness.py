"""Faithfulness of explanation maps: deletion and insertion curves (Petsiuk et al. 2018).

For one slice, one class and one map, the *explained score* is the mean softmax probability
of the class over the explained pixels: the slice's pixels of that class in ``labels`` (the
labels after the 3D clean-up), fixed from the unperturbed slice. **Deletion** removes the
most-attributed pixels first by setting them to ``removed`` (network input units; 0 is the HU
window's lower bound, how the network sees air and fat) and records the score after each of
``steps`` steps. **Insertion** starts from a blurred copy of the slice (Gaussian, sigma 8
pixels) and puts the original pixels back, most attributed first. A faithful map makes the
deletion score fall early (small area under the curve) and the insertion score rise early
(large area). Step ``k`` has changed ``(k / steps)²`` of the slice's pixels: a tumour covers
well under 1 % of a slice, and even steps of 5 % would remove it in the first step for every
map. Areas are taken over the fraction of pixels changed, 0 to 1, by the trapezoid rule; the
score is a probability, so they lie in [0, 1]. Every channel of a 2.5D input is changed at the
chosen pixels.

Each method is compared with two references that know nothing about the network: a random
map (seeded) and an edge map (Sobel gradient magnitude of the network input). Ties in a map,
such as the zeros outside a CAM's support, are broken at random (seeded).

:func:`faithfulness_curves` measures one case (canonical CT and labels) for every class and
map; :func:`deletion_insertion` is the measurement itself for given maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import CLASS_NAMES, LIVER, TUMOR
from ..segment.map_grid import labels_on_map_grid
from ..segment.preprocessing import SliceInputSpec
from .cam import DEFAULT_WEIGHTING
from .integrated_gradients import blurred
from .methods import attribute, check_methods, default_cam_layer

REFERENCE_MAPS: tuple[str, ...] = ("random", "edge")
DEFAULT_STEPS = 20
MIN_PIXELS = 16  # a slice is measured when it holds at least this many pixels of the class


@dataclass
class CurveSummary:
    """Mean deletion and insertion curves of one map over the measured slices, and areas."""

    deletion_auc: float
    insertion_auc: float
    slices: int
    deletion: list[float]
    insertion: list[float]


@dataclass
class FaithfulnessResult:
    """Deletion/insertion areas per class name and map name (methods, then references)."""

    fractions: list[float]
    per_class: dict[str, dict[str, CurveSummary]] = field(default_factory=dict)
    slices: dict[str, list[int]] = field(default_factory=dict)  # canonical slice indices
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, values rounded to 4 decimals."""

        def rounded(values: list[float]) -> list[float]:
            return [round(float(v), 4) for v in values]

        per_class = {
            name: {
                key: {
                    **asdict(summary),
                    "deletion_auc": round(summary.deletion_auc, 4),
                    "insertion_auc": round(summary.insertion_auc, 4),
                    "deletion": rounded(summary.deletion),
                    "insertion": rounded(summary.insertion),
                }
                for key, summary in maps.items()
            }
            for name, maps in self.per_class.items()
        }
        return {
            "fractions": rounded(self.fractions),
            "perClass": per_class,
            "slices": self.slices,
            "settings": self.settings,
        }


def explained_probability(
    model: nn.Module, inputs: torch.Tensor, explained: torch.Tensor, class_id: int
) -> torch.Tensor:
    """(B,) mean softmax probability of ``class_id`` over the True pixels of ``explained``
    (B, H, W); 0 where a slice has none."""
    with torch.inference_mode():
        probability = torch.softmax(model(inputs).float(), dim=1)[:, class_id]
    weights = explained.to(probability.dtype)
    return (probability * weights).sum(dim=(1, 2)) / weights.sum(dim=(1, 2)).clamp_min(1.0)


def pixel_ranks(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of every pixel of a 2D map, 0 = most attributed; ties in random order."""
    flat = saliency.reshape(-1).astype(np.float64)
    order = np.lexsort((rng.random(flat.size), -flat))
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(flat.size)
    return ranks


def deletion_insertion(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor | np.ndarray,
    explained: torch.Tensor,
    class_id: int,
    steps: int = DEFAULT_STEPS,
    removed: float = 0.0,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion curves (B, steps + 1) of ``maps`` (B, H, W) for the network
    batch ``inputs`` (B, C, H, W), explaining the True pixels of ``explained`` (B, H, W)."""
    if steps < 1:
        raise ValueError("deletion and insertion need at least 1 step")
    maps = np.asarray(torch.as_tensor(maps).detach().float().cpu())
    if maps.shape != (inputs.shape[0], *inputs.shape[-2:]):
        raise ValueError(f"maps {maps.shape} do not match the inputs {tuple(inputs.shape)}")
    rng = np.random.default_rng(seed)
    pixels = inputs.shape[-2] * inputs.shape[-1]
    counts = torch.as_tensor(np.rint(step_fractions(steps) * pixels).astype(np.int64))
    start = blurred(inputs)
    deletion, insertion = [], []
    for index in range(inputs.shape[0]):
        ranks = torch.as_tensor(pixel_ranks(maps[index], rng)).to(inputs.device)
        chosen = (ranks[None] < counts[:, None].to(inputs.device)).view(
            steps + 1, 1, *inputs.shape[-2:]
        )
        image, blur = inputs[index : index + 1], start[index : index + 1]
        region = explained[index : index + 1].to(inputs.device)
        curves = []
        for perturbed in (
            torch.where(chosen, torch.full_like(image, removed), image),
            torch.where(chosen, image, blur),
        ):
            scores = [
                explained_probability(model, part, region.expand(len(part), -1, -1), class_id).cpu()
                for part in perturbed.split(batch_size)
            ]
            curves.append(torch.cat(scores).numpy())
        deletion.append(curves[0])
        insertion.append(curves[1])
    return np.stack(deletion), np.stack(insertion)


def step_fractions(steps: int) -> np.ndarray:
    """Fractions of the slice's pixels changed after each step: ``(k / steps)²``, k = 0 ..
    steps, dense at the start, where a small region is removed or revealed."""
    return np.linspace(0.0, 1.0, steps + 1) ** 2


def area_under_curve(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area over [0, 1] of curves (..., steps + 1) sampled at :func:`step_fractions`."""
    values = np.asarray(curves, dtype=np.float64)
    fractions = step_fractions(values.shape[-1] - 1)
    return ((values[..., 1:] + values[..., :-1]) * np.diff(fractions)).sum(axis=-1) / 2


def reference_map(inputs: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """A map (B, H, W) that knows nothing about the network: ``random`` (uniform, seeded) or
    ``edge`` (Sobel gradient magnitude of the inputs, summed over channels)."""
    if kind == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(inputs.shape[0], *inputs.shape[-2:], generator=generator)
    if kind == "edge":
        x = inputs.detach().float().cpu()
        sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        kernels = torch.stack([sobel, sobel.T])[:, None].repeat(x.shape[1], 1, 1, 1)
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        gradients = F.conv2d(padded, kernels, groups=x.shape[1])  # (B, 2C, H, W)
        return gradients.pow(2).sum(dim=1).sqrt()
    raise ValueError(f"unknown reference map {kind!r}; choose from {REFERENCE_MAPS}")


def choose_slices(explained: np.ndarray, max_slices: int, min_pixels: int = MIN_PIXELS) -> list:
    """Up to ``max_slices`` slice indices spread evenly over those with enough pixels."""
    counts = explained.reshape(explained.shape[0], -1).sum(axis=1)
    candidates = np.flatnonzero(counts >= min_pixels)
    if candidates.size <= max_slices:
        return candidates.tolist()
    positions = np.linspace(0, candidates.size - 1, max_slices).round().astype(int)
    return candidates[positions].tolist()


def faithfulness_curves(
    model: nn.Module,
    spec: SliceInputSpec,
    canonical_volume: np.ndarray,
    labels: np.ndarray,
    class_ids: Sequence[int] = (LIVER, TUMOR),
    methods: Sequence[str] = ("gradcam", "gradcam++", "integrated-gradients"),
    references: Sequence[str] = REFERENCE_MAPS,
    max_slices: int = 8,
    steps: int = DEFAULT_STEPS,
    layer: str | None = None,
    weighting: str = DEFAULT_WEIGHTING,
    seed: int = 0,
    ig_steps: int = 16,
    batch_size: int = 32,
    slice_spacing_mm: float | None = None,
) -> FaithfulnessResult:
    """Deletion and insertion areas of each method's map and of the reference maps, per class,
    on up to ``max_slices`` canonical slices per class (spread over the class's extent).

    ``canonical_volume`` is the CT in HU and ``labels`` the labels to explain (after the 3D
    clean-up), both canonical (slices, rows, columns); labels at the CT's slice size are
    sampled onto the network's grid. ``model`` is in evaluation mode; the inputs go to its
    device. ``layer`` and ``weighting`` choose the CAM layer (default: the product's) and
    weighting (:mod:`cam`); ``ig_steps`` are Integrated Gradients' steps. A class with no
    slice of ``MIN_PIXELS`` pixels is left out. ``slice_spacing_mm`` (canonical axis 0) is
    needed when ``spec`` has a slice step.
    """
    methods = check_methods(methods)
    unknown = [kind for kind in references if kind not in REFERENCE_MAPS]
    if unknown:
        raise ValueError(f"unknown reference maps {unknown}; choose from {REFERENCE_MAPS}")
    device = next(model.parameters()).device
    grid = labels_on_map_grid(np.asarray(labels), spec.input_size)
    cam = {"layer": layer, "weighting": weighting}
    result = FaithfulnessResult(
        fractions=step_fractions(steps).tolist(),
        settings=_settings(model, steps, max_slices, cam, ig_steps, seed),
    )
    for class_id in class_ids:
        chosen = choose_slices(grid == class_id, max_slices)
        if not chosen:
            continue
        name = CLASS_NAMES[class_id]
        inputs = spec.batch(canonical_volume, chosen, slice_spacing_mm).to(device)
        region = torch.from_numpy(grid[chosen] == class_id).to(device)
        maps = _maps(model, spec, inputs, region, class_id, methods, cam, ig_steps)
        maps.update({kind: reference_map(inputs, kind, seed) for kind in references})
        result.slices[name] = chosen
        result.per_class[name] = {
            key: _summary(model, inputs, saliency, region, class_id, steps, batch_size, seed)
            for key, saliency in maps.items()
        }
    return result


def _settings(
    model: nn.Module, steps: int, max_slices: int, cam: dict, ig_steps: int, seed: int
) -> dict:
    """How the curves were measured, for the record (``FaithfulnessResult.settings``)."""
    return {
        "score": "mean softmax probability of the class over its labelled pixels",
        "removed": "HU window lower bound",
        "insertionStart": "Gaussian blur, sigma 8 pixels",
        "steps": steps,
        "maxSlices": max_slices,
        "layer": cam["layer"] or default_cam_layer(model),
        "weighting": cam["weighting"],
        "integratedGradientsSteps": ig_steps,
        "seed": seed,
    }


def _summary(
    model: nn.Module,
    inputs: torch.Tensor,
    saliency: torch.Tensor,
    region: torch.Tensor,
    class_id: int,
    steps: int,
    batch_size: int,
    seed: int,
) -> CurveSummary:
    """Mean curves and areas of one map over the slices of ``inputs``."""
    deletion, insertion = deletion_insertion(
        model, inputs, saliency, region, class_id, steps, 0.0, batch_size, seed
    )
    return CurveSummary(
        deletion_auc=float(area_under_curve(deletion).mean()),
        insertion_auc=float(area_under_curve(insertion).mean()),
        slices=len(inputs),
        deletion=deletion.mean(axis=0).tolist(),
        insertion=insertion.mean(axis=0).tolist(),
    )


def _maps(
    model: nn.Module,
    spec: SliceInputSpec,
    inputs: torch.Tensor,
    region: torch.Tensor,
    class_id: int,
    methods: Sequence[str],
    cam: dict[str, Any],
    ig_steps: int,
) -> dict[str, torch.Tensor]:
    """Each method's map explaining the pixels of ``region`` as ``class_id``."""
    labels = torch.where(region, class_id, -1)  # only the region counts as the class
    maps = {}
    for method in methods:
        options = {"steps": ig_steps} if method == "integrated-gradients" else cam
        maps[method] = attribute(
            model, inputs, class_id, method, hu_window=spec.hu_window, labels=labels, **options
        )
    return maps
