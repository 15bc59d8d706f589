"""Batched slice-by-slice inference with Grad-CAM, on the GPU or the CPU.

The engine walks the canonical axial slices in batches: builds the network input for the
batch only (so memory does not grow with intermediate copies of the volume), runs one
forward pass, one backward pass per explained class, resizes probabilities and maps back to
the slice size and writes them into the output arrays. It reports progress, stops between
batches when cancelled, and halves the batch when the device runs out of memory.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import Cancelled
from .explain import GradCAM
from .preprocessing import SliceInputSpec

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
    """Per-voxel outputs in canonical orientation at full slice size."""

    labels: np.ndarray  # uint8 (slices, rows, columns)
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)  # float32, unnormalised
    batch_size: int = 0
    seconds: float = 0.0


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, OutOfMemoryError) or "out of memory" in str(error).lower()


class SliceInferenceEngine:
    """Runs a 2D segmentation network over every axial slice of a canonical volume."""

    def __init__(
        self,
        model: nn.Module,
        spec: SliceInputSpec,
        device: torch.device,
        target_layer: nn.Module | None = None,
        batch_size: int = 16,
        use_amp: bool = True,
    ) -> None:
        self.model = model.to(device).eval()
        self.spec = spec
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.use_amp = use_amp and device.type == "cuda"
        self.gradcam = GradCAM(self.model, target_layer) if target_layer is not None else None

    def run(
        self,
        canonical_volume: np.ndarray,
        explain_classes: Sequence[int] = (),
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> SliceOutputs:
        """Segment (and explain ``explain_classes``) every slice; raises ``Cancelled``."""
        if explain_classes and self.gradcam is None:
            raise ValueError("explaining needs a Grad-CAM target layer")
        start = time.perf_counter()
        depth, rows, columns = canonical_volume.shape
        outputs = SliceOutputs(labels=np.zeros((depth, rows, columns), dtype=np.uint8))
        for class_id in explain_classes:
            outputs.heatmaps[class_id] = np.zeros((depth, rows, columns), dtype=np.float32)
        first = 0
        while first < depth:
            if cancel is not None and cancel.is_set():
                raise Cancelled("Segment & Explain was cancelled.")
            indices = list(range(first, min(first + self.batch_size, depth)))
            try:
                self._run_batch(canonical_volume, indices, explain_classes, outputs)
            except (RuntimeError, OutOfMemoryError) as error:
                if not _is_out_of_memory(error) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            first = indices[-1] + 1
            if progress is not None:
                progress(first / depth, f"slice {first} of {depth}")
        outputs.batch_size = self.batch_size
        outputs.seconds = time.perf_counter() - start
        return outputs

    def _autocast(self):
        if self.use_amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _run_batch(
        self,
        canonical_volume: np.ndarray,
        indices: list[int],
        explain_classes: Sequence[int],
        outputs: SliceOutputs,
    ) -> None:
        slice_size = tuple(canonical_volume.shape[1:])
        inputs = self.spec.batch(canonical_volume, indices).to(self.device)
        with self._autocast():
            if explain_classes:
                logits, maps = self.gradcam(inputs, explain_classes, slice_size)
            else:
                with torch.inference_mode():
                    logits, maps = self.model(inputs), {}
        with torch.inference_mode():
            probabilities = torch.softmax(logits.float(), dim=1)
            probabilities = F.interpolate(
                probabilities, size=slice_size, mode="bilinear", align_corners=False
            )
            labels = probabilities.argmax(dim=1).to(torch.uint8)
        block = slice(indices[0], indices[-1] + 1)
        outputs.labels[block] = labels.cpu().numpy()
        for class_id, cam in maps.items():
            outputs.heatmaps[class_id][block] = cam.cpu().numpy()
