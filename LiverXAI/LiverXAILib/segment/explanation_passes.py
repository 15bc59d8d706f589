"""The slice engine's explanation passes besides segmentation: maps of given labels, and IG.

:func:`explain_labels` (what :meth:`.inference.SliceInferenceEngine.explain` does) explains
given labels, the product's after the 3D clean-up, with the CAM methods (one forward pass and
one backward pass per class) on the slices that hold them. :func:`integrated_gradients_pass`,
much dearer, runs on the slices that hold an explained class only, with its estimated
duration announced first through the progress callback. The maps go into the engine's
:class:`.inference.SliceOutputs`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..explain.cam import LayerCAM

if TYPE_CHECKING:
    from .inference import ProgressCallback, SliceInferenceEngine, SliceOutputs


def add_empty_maps(
    outputs: SliceOutputs,
    methods: Sequence[str],
    explain_classes: Sequence[int],
    shape: tuple[int, ...],
) -> None:
    """An all-zero map of ``shape`` in ``outputs.heatmaps`` per method and explained class."""
    for method in methods:
        for class_id in explain_classes:
            outputs.heatmaps[method, class_id] = np.zeros(shape, np.float32)


def explain_labels(
    engine: SliceInferenceEngine,
    canonical_volume: np.ndarray,
    labels: np.ndarray,
    explain_classes: Sequence[int],
    methods: Sequence[str],
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    outputs: SliceOutputs,
    spacing: float | None,
) -> SliceOutputs:
    """Explain the pixels of each class in ``labels`` (on the map grid) with ``methods`` into
    ``outputs``, on the slices that hold the class (see ``SliceInferenceEngine.explain``)."""
    engine.spec.step_slices(spacing)
    methods, cam_methods = engine.checked_methods(explain_classes, methods)
    if labels.shape != (canonical_volume.shape[0], *engine.spec.input_size):
        raise ValueError(f"labels {labels.shape} are not on the map grid of the volume")
    report = progress or (lambda _fraction, _message: None)
    outputs.map_size = tuple(engine.spec.input_size)
    add_empty_maps(outputs, methods, explain_classes, labels.shape)
    flat = labels.reshape(labels.shape[0], -1)
    order = [i for i in range(len(flat)) if np.isin(flat[i], explain_classes).any()]
    with_ig = "integrated-gradients" in methods
    share = 0.5 if with_ig and cam_methods else 1.0
    start = time.perf_counter()
    cam = engine.new_layer_cam(cam_methods)
    if cam is not None:
        engine.for_each_batch(
            order,
            lambda batch: _explain_batch(
                engine, canonical_volume, batch, labels, explain_classes, cam, outputs, spacing
            ),
            cancel,
            report,
            0.0,
            share,
            "explained slice",
        )
    outputs.phase_seconds["explain"] = time.perf_counter() - start
    if with_ig:
        offset = 1.0 - share if cam is not None else 0.0
        integrated_gradients_pass(
            engine,
            canonical_volume,
            explain_classes,
            outputs,
            report,
            cancel,
            offset,
            labels,
            spacing,
        )
    return outputs


def _explain_batch(
    engine: SliceInferenceEngine,
    canonical_volume: np.ndarray,
    indices: list[int],
    labels: np.ndarray,
    explain_classes: Sequence[int],
    cam: LayerCAM,
    outputs: SliceOutputs,
    spacing: float | None,
) -> None:
    """CAM maps of ``indices`` explaining the given labels (one forward, one backward per
    class)."""
    inputs = engine.batch_inputs(canonical_volume, indices, spacing)
    explained = torch.from_numpy(labels[indices]).to(engine.device)
    targets = [torch.full((len(indices),), c, dtype=torch.long) for c in explain_classes]
    with engine.autocast():
        _, maps = cam.explain(inputs, targets, explained)
    with torch.inference_mode():
        for method, per_target in maps.items():
            for class_id, cam_map in zip(explain_classes, per_target, strict=True):
                outputs.heatmaps[method, class_id][indices] = cam_map.float().cpu().numpy()


def integrated_gradients_pass(
    engine: SliceInferenceEngine,
    canonical_volume: np.ndarray,
    explain_classes: Sequence[int],
    outputs: SliceOutputs,
    report: ProgressCallback,
    cancel: threading.Event | None,
    offset: float,
    labels: np.ndarray | None = None,
    spacing: float | None = None,
) -> None:
    """Integrated Gradients on the slices that hold an explained class, after announcing
    the estimated duration through ``report``; ``labels`` on the map grid are the pixels to
    explain (default: the network's own prediction). The pass's seconds go into
    ``outputs.phase_seconds["integrated-gradients"]``."""
    from ..explain.integrated_gradients import IntegratedGradientsExplainer

    mark = time.perf_counter()
    explainer = IntegratedGradientsExplainer(
        engine.model, engine.spec.hu_window, **engine.ig_options
    )
    chosen = outputs.labels if labels is None else labels
    flat = chosen.reshape(chosen.shape[0], -1)
    per_class = {c: np.flatnonzero((flat == c).any(axis=1)) for c in explain_classes}
    order = sorted(set().union(*(set(v.tolist()) for v in per_class.values())))
    maps_count = sum(len(v) for v in per_class.values())
    _announce(
        engine, explainer, canonical_volume, order, maps_count, outputs, report, offset, spacing
    )

    def work(batch: list[int]) -> None:
        inputs = engine.batch_inputs(canonical_volume, batch, spacing)
        targets = [torch.full((len(batch),), c, dtype=torch.long) for c in explain_classes]
        explainer.internal_batch_size = engine.batch_size  # as much memory as a batch
        explained = None if labels is None else torch.from_numpy(labels[batch]).to(engine.device)
        with engine.autocast():
            maps = explainer.explain(inputs, targets, explained)
        for class_id, ig_map in zip(explain_classes, maps, strict=True):
            values = ig_map.float().cpu().numpy()
            outputs.heatmaps["integrated-gradients", class_id][batch] = values

    if order:
        engine.for_each_batch(
            order, work, cancel, report, offset, 1.0 - offset, "Integrated Gradients slice"
        )
    outputs.phase_seconds["integrated-gradients"] = time.perf_counter() - mark


def _announce(
    engine: SliceInferenceEngine,
    explainer: Any,
    canonical_volume: np.ndarray,
    order: list[int],
    maps_count: int,
    outputs: SliceOutputs,
    report: ProgressCallback,
    offset: float,
    spacing: float | None,
) -> None:
    """Estimate the pass's seconds on a few of its slices, keep and announce it (0: none)."""
    from ..explain.integrated_gradients import estimate_seconds

    if not order:
        outputs.integrated_gradients_estimate = 0.0
        return
    sample = engine.spec.batch(canonical_volume, order[: min(4, engine.batch_size)], spacing)
    estimate = estimate_seconds(engine.model, sample.to(engine.device), maps_count, explainer.steps)
    outputs.integrated_gradients_estimate = estimate
    report(offset, f"Integrated Gradients: {maps_count} slice maps, about {estimate:.0f} s")
