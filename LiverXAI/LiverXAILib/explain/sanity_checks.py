"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018) applied to our methods.

A map that explains a network must depend on the network's learned parameters and on the
relation between images and labels that it learned. Two checks measure this:

- **Cascading model randomisation** (:func:`cascading_randomization`): a copy of the network
  has its parameters re-initialised block by block, from the output towards the input and
  cumulatively, and the map is recomputed after each step. Default blocks are the model's
  top-level children, with plain ``ModuleList``/``Sequential`` containers (encoder and decoder
  stages, transformer layers) split into their items; blocks without parameters are skipped,
  and the order is the reverse of the order in which a forward pass enters the blocks (for
  the U-Net: head, decoder.3, ..., decoder.0, encoder.3, ..., encoder.0, stem). A block is
  re-initialised with each module's ``reset_parameters()`` (BatchNorm: weight 1, bias 0,
  running mean 0 and variance 1); parameters of a module without one are re-drawn from
  N(0, 0.02²); parameters the model holds directly (TransUNet's position embedding) are
  re-drawn with the last block. Each step is seeded.
- **Label permutation** (:func:`label_permutation_similarity`): the maps of a network trained
  on the true labels are compared with those of the same architecture trained on labels
  permuted across images, which can only memorise.

Similarity is the Spearman rank correlation of the absolute maps, over all pixels of the
batch. A constant map has no ranks to correlate: its correlation is taken as 0 and noted.

By default both models explain the same pixels: the region the original (trained) model
predicts as the target class (``fixed_region=True``). Otherwise a randomised model that
no longer predicts the class would explain nothing, and its empty map would pass trivially.

The value of one cascade depends on the random draw; :func:`average_cascades` averages the
magnitudes of several seeds' cascades block by block, which is what the test suite judges.

Verdict (:func:`judge`), on correlation magnitudes ``|rho|`` (a strongly negative rank
correlation is structure shared with the trained model's map too, inverted): a method
**passes** iff
  1. after the full cascade ``|rho|`` is below ``final_threshold`` (0.5),
  2. the cascade is broadly decreasing: the Spearman correlation of step index against
     ``|rho|`` is negative, or the last ``|rho|`` is not above the first by more than
     ``CASCADE_TOLERANCE`` (0.05), and
  3. when measured, the permuted-label ``|rho|`` is below ``permuted_threshold`` (0.5), and
  4. when the cascades of several seeds are given (``seed_finals``), every one of them ends
     below ``final_threshold`` too: a map that survives full randomisation for some draws
     of the weights does not depend reliably on what the network learned.
The reason is one line starting with ``"passed"`` or ``"FAILS"``, like ``MethodInfo.sanity``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from .methods import attribute, check_methods, default_cam_layer

CASCADE_TOLERANCE = 0.05
PLAIN_CONTAINERS = (nn.ModuleList, nn.Sequential)


@dataclass
class RandomizationStep:
    """One cascade step: the block randomised (cumulatively from the top) and the similarity."""

    layers: str
    spearman: float
    note: str = ""  # e.g. "constant map" when the correlation is undefined and taken as 0


@dataclass
class SanityResult:
    """Outcome of the sanity checks for one method."""

    method: str
    passed: bool
    randomization: list[RandomizationStep]
    permuted_label_spearman: float | None
    reason: str

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        return asdict(self)


@dataclass
class _Similarity:
    value: float
    notes: list[str] = field(default_factory=list)


def rank_similarity(first: torch.Tensor | np.ndarray, second: torch.Tensor | np.ndarray) -> float:
    """Spearman rank correlation of ``|first|`` and ``|second|`` over all their elements.

    A constant map has no defined correlation: 0 is returned.
    """
    return _similarity(first, second).value


def _similarity(first, second) -> _Similarity:
    a = np.abs(np.asarray(torch.as_tensor(first).detach().cpu(), dtype=np.float64))
    b = np.abs(np.asarray(torch.as_tensor(second).detach().cpu(), dtype=np.float64))
    return _rank_correlation(a, b)


def _rank_correlation(first: np.ndarray, second: np.ndarray) -> _Similarity:
    """Spearman correlation of two arrays' values, 0 (and a note) where a side is constant."""
    a, b = first.ravel(), second.ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps of different sizes: {a.size} and {b.size} values")
    if a.size < 2:
        return _Similarity(0.0, ["fewer than 2 values"])
    notes = [f"{name} map constant" for name, m in (("first", a), ("second", b)) if np.ptp(m) == 0]
    if notes:
        return _Similarity(0.0, notes)
    value = float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])
    return _Similarity(value if np.isfinite(value) else 0.0)


class _FixedPrediction(nn.Module):
    """``model`` whose prediction on ``inputs`` is forced to ``predicted`` by a constant offset.

    The offset is detached and constant, so gradients (and thus every attribution) are the
    model's own; only the argmax that selects the explained pixels changes. Other inputs
    (Integrated Gradients' path points) pass through unchanged.
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, predicted: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs
        self.predicted = predicted
        layer = default_cam_layer(model)
        self.gradcam_layer = f"model.{layer}" if layer else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if x is not self.inputs:
            return logits
        spread = (logits.amax(dim=1) - logits.amin(dim=1)).detach() + 1.0  # (B, H, W)
        one_hot = torch.zeros_like(logits).scatter_(1, self.predicted[:, None], 1.0)
        return logits + one_hot * spread[:, None]


def attribute_on_region(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    method: str,
    predicted: torch.Tensor | None,
    **options,
) -> torch.Tensor:
    """:func:`explain.attribute`, explaining the pixels that ``predicted`` (B, H, W) assigns
    to the target class instead of those ``model`` predicts (``None``: the model's own)."""
    if predicted is None:
        return attribute(model, inputs, target, method, **options)
    if options.get("layer") is not None:
        options["layer"] = f"model.{options['layer']}"
    wrapped = _FixedPrediction(model, inputs, predicted)
    return attribute(wrapped, inputs, target, method, **options)


def _maps(model, inputs, target, method: str, predicted, options: dict) -> torch.Tensor:
    return attribute_on_region(model, inputs, target, method, predicted, **options)


def _predicted(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs).argmax(dim=1)


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def randomization_blocks(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Default cascade blocks of ``model``, ordered from the output towards the input.

    Top-level children, plain ``ModuleList``/``Sequential`` children split into their items,
    blocks without parameters or never run left out; ordered by the reverse of the order in
    which a forward pass of ``example`` first enters them.
    """
    candidates: dict[str, nn.Module] = {}
    for name, child in model.named_children():
        if type(child) in PLAIN_CONTAINERS:
            for item_name, item in child.named_children():
                candidates[f"{name}.{item_name}"] = item
        else:
            candidates[name] = child
    entered: list[str] = []
    handles = [
        module.register_forward_pre_hook(
            lambda _module, _args, name=name: entered.append(name) if name not in entered else None
        )
        for name, module in candidates.items()
        if _has_parameters(module)
    ]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return entered[::-1]


def randomize_module(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter of ``module`` in place, reproducibly for ``seed``.

    Uses each submodule's ``reset_parameters()`` (BatchNorm's also sets running mean 0 and
    variance 1); parameters of submodules without it are re-drawn from N(0, 0.02²).
    """
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for submodule in module.modules():
            reset = getattr(submodule, "reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for parameter in submodule.parameters(recurse=False):
                    nn.init.normal_(parameter, std=0.02)


def _randomize_direct_parameters(model: nn.Module, seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for parameter in model.parameters(recurse=False):
            nn.init.normal_(parameter, std=0.02)


def cascading_randomization(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    method: str,
    blocks: Sequence[str] | None = None,
    seed: int = 0,
    fixed_region: bool = True,
    **options,
) -> list[RandomizationStep]:
    """Similarity of the map to the original model's after each cumulative randomisation step.

    ``model`` is deep-copied and never modified. ``blocks`` are dotted module names ordered
    from the output towards the input (default :func:`randomization_blocks`). ``options`` go to
    :func:`explain.attribute` (``layer``, ``hu_window``, ``steps``, ...). With ``fixed_region``
    every step explains the pixels the original model predicts as the target class.
    """
    check_methods([method])
    working = copy.deepcopy(model).eval()
    names = list(blocks) if blocks is not None else randomization_blocks(working, inputs)
    modules = dict(working.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise ValueError(f"{type(model).__name__} has no block(s) {unknown} to randomise")
    predicted = _predicted(working, inputs) if fixed_region else None
    reference = _maps(working, inputs, target, method, predicted, options)
    steps = []
    for index, name in enumerate(names):
        block_seed = seed * 100_003 + index
        randomize_module(modules[name], block_seed)
        if index == len(names) - 1 and blocks is None:
            _randomize_direct_parameters(working, block_seed + 50_000)
        similarity = _similarity(
            reference, _maps(working, inputs, target, method, predicted, options)
        )
        steps.append(RandomizationStep(name, similarity.value, "; ".join(similarity.notes)))
    return steps


def label_permutation_similarity(
    model_trained: nn.Module,
    model_on_permuted_labels: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    method: str,
    fixed_region: bool = True,
    **options,
) -> float:
    """Spearman similarity of the maps of a model trained on true and on permuted labels.

    With ``fixed_region`` both explain the pixels the trained model predicts as the target.
    """
    check_methods([method])
    predicted = _predicted(model_trained, inputs) if fixed_region else None
    trained = _maps(model_trained, inputs, target, method, predicted, options)
    permuted = _maps(model_on_permuted_labels, inputs, target, method, predicted, options)
    return rank_similarity(trained, permuted)


def average_cascades(cascades: Sequence[Sequence[RandomizationStep]]) -> list[RandomizationStep]:
    """Per block, the mean ``|rho|`` of cascades over the same blocks (e.g. several seeds)."""
    if not cascades:
        raise ValueError("no cascades to average")
    blocks = [step.layers for step in cascades[0]]
    if any([step.layers for step in cascade] != blocks for cascade in cascades):
        raise ValueError("the cascades randomise different blocks")
    averaged = []
    for position, block in enumerate(blocks):
        steps = [cascade[position] for cascade in cascades]
        notes = sorted({step.note for step in steps if step.note})
        magnitude = float(np.mean([abs(step.spearman) for step in steps]))
        averaged.append(RandomizationStep(block, magnitude, "; ".join(notes)))
    return averaged


def cascade_trend(randomization: Sequence[RandomizationStep]) -> float:
    """Spearman correlation of step index against ``|rho|`` (negative: decreasing)."""
    values = np.asarray([abs(step.spearman) for step in randomization], dtype=np.float64)
    if values.size < 2:
        return 0.0
    return _rank_correlation(np.arange(values.size, dtype=np.float64), values).value


def judge(
    method: str,
    randomization: Sequence[RandomizationStep],
    permuted_label_spearman: float | None = None,
    final_threshold: float = 0.5,
    permuted_threshold: float = 0.5,
    seed_finals: Sequence[float] | None = None,
) -> SanityResult:
    """Verdict of the sanity checks for ``method`` (criteria in the module docstring);
    ``seed_finals`` are the last correlations of each seed's cascade."""
    if not randomization:
        raise ValueError("the cascade has no steps to judge")
    first, last = abs(randomization[0].spearman), abs(randomization[-1].spearman)
    trend = cascade_trend(randomization)
    decreasing = trend < 0 or last <= first + CASCADE_TOLERANCE
    failures = []
    if not last < final_threshold:
        failures.append(
            f"maps still correlate |rho| = {last:.2f} (>= {final_threshold}) with the trained "
            "model's after full randomisation"
        )
    if not decreasing:
        failures.append(
            f"the cascade does not decrease (|rho| first {first:.2f}, last {last:.2f}, "
            f"trend {trend:.2f})"
        )
    surviving = [abs(v) for v in seed_finals or () if not abs(v) < final_threshold]
    if surviving:
        failures.append(
            f"for {len(surviving)} of {len(seed_finals)} random draws the fully randomised "
            f"model's maps still correlate |rho| = {max(surviving):.2f} (>= {final_threshold})"
        )
    permuted = None if permuted_label_spearman is None else abs(permuted_label_spearman)
    if permuted is not None and not permuted < permuted_threshold:
        failures.append(
            f"maps of a model trained on permuted labels correlate |rho| = {permuted:.2f} "
            f"(>= {permuted_threshold})"
        )
    summary = f"|rho| {first:.2f} -> {last:.2f} over a {len(randomization)}-block cascade"
    if permuted is not None:
        summary += f", {permuted:.2f} with permuted labels"
    constant = sorted({step.layers for step in randomization if step.note})
    if constant:
        summary += f"; constant maps (taken as 0) after {', '.join(constant)}"
    if failures:
        reason = "FAILS: " + "; ".join(failures) + f" ({summary})"
    else:
        reason = f"passed: maps decorrelate as layers are randomised from the top ({summary})"
    return SanityResult(method, not failures, list(randomization), permuted_label_spearman, reason)
