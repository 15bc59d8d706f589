"""Batched slice-by-slice inference with explanations and uncertainty, on the GPU or the CPU.

The engine walks the canonical axial slices in batches: builds the network input for the
batch only (so memory does not grow with intermediate copies of the volume), runs one
forward pass (shared by segmentation, Grad-CAM and Grad-CAM++), one backward pass per
explained class, the extra passes of the uncertainty estimate, resizes probabilities, maps
and uncertainty back to the slice size and writes them into the output arrays. Integrated
Gradients, much dearer, runs afterwards on the slices that hold an explained class only, with
its estimated duration announced first. :meth:`SliceInferenceEngine.explain` explains given
labels instead (the product's labels after the 3D clean-up), on the slices that hold them.
The engine reports progress, stops between batches when cancelled, and halves the batch when
the device runs out of memory. ``slice_spacing_mm``, the volume's spacing along the canonical
slice axis, is needed by models whose 2.5D neighbours lie a fixed distance apart
(``SliceInputSpec.slice_step_mm``).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..constants import TUMOR
from ..errors import Cancelled
from ..explain.cam import CAM_VARIANTS, CAM_WEIGHTINGS, DEFAULT_WEIGHTING, LayerCAM
from ..explain.methods import check_methods, default_cam_layer
from ..models.batch_norm_folding import fold_batch_norm as fold_batch_norm_into_convolutions
from ..models.networks import gradcam_layer
from .explanation_passes import add_empty_maps, explain_labels, integrated_gradients_pass
from .label_upsampling import labels_from_probabilities
from .preprocessing import SliceInputSpec
from .slices_per_pass import cpu_batch_limit
from .uncertainty import (
    UncertaintySpec,
    averaged_probabilities,
    check_uncertainty,
    normalized_entropy,
)

ProgressCallback = Callable[[float, str], None]
# torch < 2.5 has only the CUDA-specific class.
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def choose_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when a CUDA build of torch sees a GPU, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "CUDA was requested but torch sees no CUDA GPU (a CPU build of torch, or no "
            "driver). Choose 'auto' or 'cpu'."
        )
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {requested!r}: use auto, cuda or cpu")
    return torch.device(requested)


def describe_device(requested: str = "auto") -> str:
    """One line saying which device will run and why, for the module's panel and reports."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return f"CUDA available: {name}" if requested != "cpu" else f"CPU (chosen; CUDA has {name})"
    reason = (
        "no CUDA build of torch installed" if torch.version.cuda is None else "no CUDA GPU found"
    )
    return f"CPU: {reason}"


@dataclass
class SliceOutputs:
    """Per-voxel outputs in canonical orientation: labels at full slice size, explanation
    maps and uncertainty at the network's input size (``map_size``), which is all the detail
    they have; :func:`orientation.coarse_ijk_to_ras` gives their geometry."""

    labels: np.ndarray  # uint8 (slices, rows, columns)
    map_size: tuple[int, int] = (0, 0)
    heatmaps: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # unnormalised
    uncertainty: np.ndarray | None = None  # float32 normalised entropy in [0, 1]
    batch_size: int = 0
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    integrated_gradients_estimate: float | None = None  # seconds, announced before it ran


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, OutOfMemoryError) or "out of memory" in str(error).lower()


def biased_probabilities(probabilities: torch.Tensor, tumor_factor: float) -> torch.Tensor:
    """``probabilities`` (B, classes, h, w) with the tumour's multiplied by ``tumor_factor``
    (e**bias: its log-odds shifted by the bias); the input itself when the factor is 1."""
    if tumor_factor == 1.0:
        return probabilities
    biased = probabilities.clone()
    biased[:, TUMOR] *= tumor_factor
    return biased


class SliceInferenceEngine:
    """Runs a 2D segmentation network over every axial slice of a canonical volume.

    ``cam_layer`` names the Grad-CAM/Grad-CAM++ target layer (default: the model's own);
    ``ig_options`` go to :class:`IntegratedGradientsExplainer` (steps, baseline, ...).
    ``channels_last`` runs the convolutions on NHWC tensors, 1.4x faster on this project's
    CPU (``make bench``) and the layout tensor cores prefer. ``fold_batch_norm`` runs a copy
    of the network with each BatchNorm folded into its convolution (same outputs, fewer
    passes over the feature maps; the Grad-CAM layer itself is never folded). On the CPU,
    ``batch_size`` is capped so that feature maps stay small (:mod:`cpu_batch`); the size
    used is in :attr:`SliceOutputs.batch_size`. ``tumor_bias`` (log-odds, from the model's
    metadata) is added to the tumour class before the arg-max that makes the labels;
    ``min_tumor_ml``, also the model's, is kept for the clean-up that follows
    (:func:`.postprocessing.drop_small_tumors`).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: SliceInputSpec,
        device: torch.device,
        batch_size: int = 16,
        use_amp: bool = True,
        cam_layer: str | None = None,
        ig_options: dict | None = None,
        channels_last: bool = True,
        fold_batch_norm: bool = True,
        cam_weighting: str = DEFAULT_WEIGHTING,
        tumor_bias: float = 0.0,
        min_tumor_ml: float = 0.0,
    ) -> None:
        if cam_weighting not in CAM_WEIGHTINGS:
            raise ValueError(f"unknown CAM weighting {cam_weighting!r}: {CAM_WEIGHTINGS}")
        self.channels_last = channels_last
        self.cam_weighting = cam_weighting
        self.cam_layer_name = cam_layer or default_cam_layer(model)
        if fold_batch_norm:
            model = fold_batch_norm_into_convolutions(model, keep=[self.cam_layer_name or ""])
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device=device, memory_format=memory_format).eval()
        self.spec = spec
        self.device = device
        self.batch_size = max(1, int(batch_size))
        if device.type == "cpu":  # bigger CPU batches only cost page faults (cpu_batch.py)
            self.batch_size = min(self.batch_size, cpu_batch_limit(self.model, spec))
        self.use_amp = use_amp and device.type == "cuda"
        self.cam_layer = (
            gradcam_layer(self.model, self.cam_layer_name) if self.cam_layer_name else None
        )
        self.ig_options = dict(ig_options or {})
        self.tumor_factor = math.exp(tumor_bias)
        self.min_tumor_ml = min_tumor_ml

    def run(
        self,
        canonical_volume: np.ndarray,
        explain_classes: Sequence[int] = (),
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        methods: Sequence[str] = ("gradcam",),
        uncertainty: UncertaintySpec | None = None,
        slice_spacing_mm: float | None = None,
    ) -> SliceOutputs:
        """Segment every slice, explain ``explain_classes`` with ``methods`` and estimate
        ``uncertainty`` if given; raises ``Cancelled`` when ``cancel`` is set.
        ``slice_spacing_mm`` (canonical axis 0) is needed when the spec has a slice step."""
        spacing = slice_spacing_mm
        self.spec.step_slices(spacing)  # a missing spacing fails before any work
        methods, cam_methods = self.checked_methods(explain_classes, methods)
        if uncertainty is not None:
            check_uncertainty(uncertainty, self.model)
        report = progress or (lambda _fraction, _message: None)
        with_ig = "integrated-gradients" in methods
        start = time.perf_counter()
        outputs = self._new_outputs(canonical_volume.shape, methods, explain_classes, uncertainty)
        share = 0.5 if with_ig else 1.0
        cam = self.new_layer_cam(cam_methods)
        self.for_each_batch(
            range(canonical_volume.shape[0]),
            lambda batch: self._run_batch(
                canonical_volume, batch, explain_classes, cam, uncertainty, outputs, spacing
            ),
            cancel,
            report,
            0.0,
            share,
            "slice",
        )
        outputs.phase_seconds["segment"] = time.perf_counter() - start
        if with_ig:
            integrated_gradients_pass(
                self,
                canonical_volume,
                explain_classes,
                outputs,
                report,
                cancel,
                share,
                None,
                spacing,
            )
        outputs.batch_size = self.batch_size
        outputs.seconds = time.perf_counter() - start
        return outputs

    def explain(
        self,
        canonical_volume: np.ndarray,
        labels: np.ndarray,
        explain_classes: Sequence[int],
        methods: Sequence[str] = ("gradcam",),
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        outputs: SliceOutputs | None = None,
        slice_spacing_mm: float | None = None,
    ) -> SliceOutputs:
        """Explain the pixels of each class in ``labels`` (canonical, on the map grid: the
        labels after the 3D clean-up) with ``methods``, on the slices that hold the class.

        The maps go into ``outputs.heatmaps`` (a new :class:`SliceOutputs` without labels when
        none is given); slices without the class keep an all-zero map. ``slice_spacing_mm``
        as for :meth:`run`.
        """
        if outputs is None:
            outputs = SliceOutputs(labels=np.zeros((0, 0, 0), np.uint8))
        return explain_labels(
            self,
            canonical_volume,
            labels,
            explain_classes,
            methods,
            progress,
            cancel,
            outputs,
            slice_spacing_mm,
        )

    def checked_methods(
        self, explain_classes: Sequence[int], methods: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """The methods to run (none without a class to explain) and the CAM methods among
        them; refuses CAM methods when the model declares no target layer."""
        methods = check_methods(methods) if explain_classes else []
        cam_methods = [m for m in methods if m in CAM_VARIANTS]
        if cam_methods and self.cam_layer is None:
            raise ValueError("Grad-CAM needs a target layer: the model declares none")
        return methods, cam_methods

    def _new_outputs(
        self,
        shape: tuple[int, int, int],
        methods: Sequence[str],
        explain_classes: Sequence[int],
        uncertainty: UncertaintySpec | None,
    ) -> SliceOutputs:
        """Outputs of :meth:`run` for a volume of ``shape``: labels, maps and uncertainty,
        all zero."""
        map_shape = (shape[0], *self.spec.input_size)
        outputs = SliceOutputs(
            labels=np.zeros(shape, dtype=np.uint8), map_size=tuple(self.spec.input_size)
        )
        add_empty_maps(outputs, methods, explain_classes, map_shape)
        if uncertainty is not None:
            outputs.uncertainty = np.zeros(map_shape, dtype=np.float32)
        return outputs

    def new_layer_cam(self, cam_methods: Sequence[str]) -> LayerCAM | None:
        """A Grad-CAM(++) recorder on the model's target layer; None without CAM methods."""
        if not cam_methods:
            return None
        return LayerCAM(self.model, self.cam_layer, cam_methods, self.cam_weighting)

    def for_each_batch(
        self,
        order: Sequence[int],
        work: Callable[[list[int]], None],
        cancel: threading.Event | None,
        report: ProgressCallback,
        offset: float,
        share: float,
        what: str,
    ) -> None:
        """Call ``work`` on batches of ``order``; a batch that ran out of memory is retried
        with half the batch size (kept for the rest of the run)."""
        done = 0
        while done < len(order):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Segment & Explain was cancelled.")
            batch = list(order[done : done + self.batch_size])
            try:
                work(batch)
            except (RuntimeError, OutOfMemoryError) as error:
                if not _is_out_of_memory(error) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            done += len(batch)
            report(offset + share * done / len(order), f"{what} {done} of {len(order)}")

    def batch_inputs(
        self, canonical_volume: np.ndarray, indices: Sequence[int], spacing: float | None
    ) -> torch.Tensor:
        """The network input of slices ``indices``, on the device (channels-last if chosen)."""
        inputs = self.spec.batch(canonical_volume, list(indices), spacing).to(self.device)
        if self.channels_last:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on CUDA when enabled; nothing otherwise."""
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _run_batch(
        self,
        canonical_volume: np.ndarray,
        indices: list[int],
        explain_classes: Sequence[int],
        cam: LayerCAM | None,
        uncertainty: UncertaintySpec | None,
        outputs: SliceOutputs,
        spacing: float | None,
    ) -> None:
        slice_size = tuple(canonical_volume.shape[1:])
        inputs = self.batch_inputs(canonical_volume, indices, spacing)
        targets = [torch.full((len(indices),), c, dtype=torch.long) for c in explain_classes]
        with self.autocast():
            if cam is not None:
                logits, maps = cam.explain(inputs, targets)
            else:
                with torch.inference_mode():
                    logits, maps = self.model(inputs), {}
            with torch.inference_mode():
                probabilities = torch.softmax(logits.float(), dim=1)
                if uncertainty is not None:
                    averaged = averaged_probabilities(
                        self.model, inputs, probabilities, uncertainty
                    )
        with torch.inference_mode():
            block = slice(indices[0], indices[-1] + 1)
            labels = labels_from_probabilities(
                biased_probabilities(probabilities, self.tumor_factor), slice_size
            )
            outputs.labels[block] = labels.cpu().numpy()
            for method, per_target in maps.items():
                for class_id, cam_map in zip(explain_classes, per_target, strict=True):
                    outputs.heatmaps[method, class_id][block] = cam_map.float().cpu().numpy()
            if uncertainty is not None:
                outputs.uncertainty[block] = normalized_entropy(averaged).cpu().numpy()
