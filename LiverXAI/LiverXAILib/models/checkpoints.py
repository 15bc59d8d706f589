"""Model checkpoints: state dict plus metadata, loaded without executing code.

A checkpoint is a plain dictionary ``{"format": ..., "metadata": {...}, "state_dict": {...}}``
(optionally with training state for resuming) saved with ``torch.save`` and always read with
``torch.load(..., weights_only=True)``, so a malicious file cannot run code. Files are written
atomically (temporary file, then rename). The bundled models are listed with their SHA-256 in
``Resources/Models/models.json`` and verified before use.

Whatever a file claims is checked before it is used (:meth:`CheckpointMetadata.problems`,
:func:`check_metadata`, :func:`check_weights`): a window of zero width, a size of zero, an even
number of slices, unknown classes or architectures and NaN or infinite weights are refused
with a ``CheckpointError`` naming the file and the field or tensor, never met later as a
division by zero, a torch error or an empty segmentation. ``slice_step_mm`` (2.5D models
whose neighbour slices lie a fixed distance apart, see :mod:`.preprocessing`) is absent from
older checkpoints, which then stack adjacent slices by index as before.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..constants import CLASS_NAMES, DEFAULT_HU_WINDOW
from ..errors import CheckpointError
from ..io.atomic import atomic_path
from ..segment.preprocessing import SliceInputSpec
from .networks import available_models, build_model

FORMAT = "liverxai-checkpoint-1"
MAX_INPUT_SIZE = 1024  # pixels per side; larger is no CT slice network LiverXAI can run
MAX_TUMOR_BIAS = 10.0  # log-odds; beyond this the bias decides alone, not the network


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value: Any) -> tuple | None:
    return tuple(value) if isinstance(value, (list, tuple)) and len(value) == 2 else None


@dataclass
class CheckpointMetadata:
    """Everything needed to rebuild, feed and judge a trained network."""

    architecture: str
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int] = (128, 128)
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW
    num_slices: int = 1
    slice_step_mm: float | None = None  # neighbours this far apart (mm); None: adjacent slices
    class_names: tuple[str, ...] = CLASS_NAMES
    tumor_bias: float = 0.0  # log-odds added to tumour before the arg-max (crossval-tune)
    min_tumor_ml: float = 0.0  # tumour components smaller than this become liver
    cam_layer: str | None = None  # the CAM layer measured best for these weights; None: the
    # architecture's (explain.default_cam_layer)
    training_data: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    software: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def input_spec(self) -> SliceInputSpec:
        return SliceInputSpec(
            tuple(self.hu_window), tuple(self.input_size), self.num_slices, self.slice_step_mm
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMetadata:
        """The metadata of a checkpoint's dictionary, unchecked (see :meth:`problems`)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("architecture", None)
        for key in ("input_size", "hu_window", "class_names"):
            if isinstance(known.get(key), list):
                known[key] = tuple(known[key])
        return cls(**known)

    def problems(self) -> list[str]:
        """One message per field that cannot work (``"field 'x' is ...: expected ..."``)."""
        found = []

        def bad(field_name: str, expected: str) -> None:
            value = getattr(self, field_name)
            shown = list(value) if isinstance(value, tuple) else value
            found.append(f"field {field_name!r} is {shown!r}; expected {expected}")

        if self.architecture is None:
            found.append("field 'architecture' is missing")
        elif not isinstance(self.architecture, str) or (
            self.architecture.strip().lower() not in available_models()
        ):
            bad("architecture", f"one of {', '.join(available_models())}")
        if not isinstance(self.architecture_kwargs, dict) or not all(
            isinstance(key, str) for key in self.architecture_kwargs
        ):
            bad("architecture_kwargs", "an object of keyword arguments")
        size = _pair(self.input_size)
        if size is None or not all(_is_int(n) and 0 < n <= MAX_INPUT_SIZE for n in size):
            bad("input_size", f"two integers [height, width] in 1..{MAX_INPUT_SIZE}")
        window = _pair(self.hu_window)
        if window is None or not all(_is_number(v) for v in window) or window[0] >= window[1]:
            bad("hu_window", "two finite numbers [low, high] in HU with low < high")
        if not _is_int(self.num_slices) or self.num_slices < 1 or self.num_slices % 2 == 0:
            bad("num_slices", "a positive odd integer (slices centred on the one segmented)")
        if self.slice_step_mm is not None and not (
            _is_number(self.slice_step_mm) and self.slice_step_mm > 0
        ):
            bad("slice_step_mm", "null (adjacent slices) or a finite distance in mm > 0")
        if not (_is_number(self.tumor_bias) and abs(self.tumor_bias) <= MAX_TUMOR_BIAS):
            bad("tumor_bias", f"a number of log-odds in [-{MAX_TUMOR_BIAS}, {MAX_TUMOR_BIAS}]")
        if not (_is_number(self.min_tumor_ml) and self.min_tumor_ml >= 0):
            bad("min_tumor_ml", "a finite volume in mL >= 0")
        if self.cam_layer is not None and not (isinstance(self.cam_layer, str) and self.cam_layer):
            bad("cam_layer", "null (the architecture's default) or a layer name")
        if not isinstance(self.class_names, tuple) or self.class_names != CLASS_NAMES:
            bad("class_names", f"{list(CLASS_NAMES)} (the classes LiverXAI segments)")
        if not isinstance(self.training_data, list):
            bad("training_data", "a list")
        if not isinstance(self.metrics, dict):
            bad("metrics", "an object")
        if not isinstance(self.notes, str):
            bad("notes", "a string")
        return found


def check_metadata(data: Any, name: str) -> CheckpointMetadata:
    """The checkpoint's metadata, checked; ``CheckpointError`` naming ``name`` and the fields."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{name}: its metadata is not a dictionary; not a LiverXAI model.")
    metadata = CheckpointMetadata.from_dict(data)
    problems = metadata.problems()
    if problems:
        raise CheckpointError(
            f"{name}: unusable metadata: {'; '.join(problems)}. Export the model again with "
            "LiverXAI (or fix its metadata)."
        )
    return metadata


def check_weights(state_dict: Any, name: str) -> dict[str, torch.Tensor]:
    """The state dict if every entry is a tensor and every floating one is finite."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{name}: its weights ('state_dict') are not a dictionary.")
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{name}: weight {key!r} is not a tensor.")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{name}: weight tensor {key!r} holds NaN or infinite values (the training "
                "diverged?); this model cannot segment anything. Use another checkpoint, or "
                "retrain with a lower learning rate."
            )
    return state_dict


def _network_problems(model: nn.Module, metadata: CheckpointMetadata) -> list[str]:
    """What the built network says against the metadata (channels, classes, size divisor)."""
    problems = []
    channels = getattr(model, "in_channels", metadata.num_slices)
    if channels != metadata.num_slices:
        problems.append(
            f"field 'num_slices' is {metadata.num_slices} but the network takes {channels} "
            "input channel(s)"
        )
    classes = getattr(model, "num_classes", len(CLASS_NAMES))
    if classes != len(CLASS_NAMES):
        problems.append(f"the network predicts {classes} classes, not {len(CLASS_NAMES)}")
    if isinstance(metadata.cam_layer, str) and metadata.cam_layer not in dict(
        model.named_modules()
    ):
        problems.append(
            f"field 'cam_layer' is {metadata.cam_layer!r}: the network has no such layer"
        )
    divisor = getattr(model, "size_divisor", 1)
    if _is_int(divisor) and any(n % divisor for n in metadata.input_size):
        problems.append(
            f"field 'input_size' is {list(metadata.input_size)}; the {metadata.architecture!r} "
            f"network needs multiples of {divisor}"
        )
    return problems


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    metadata: CheckpointMetadata,
    training_state: dict[str, Any] | None = None,
) -> None:
    """Save the model's weights with metadata (and optional training state) atomically.

    Raises ``CheckpointError`` for metadata that :meth:`CheckpointMetadata.problems` refuses.
    """
    problems = metadata.problems()
    if problems:
        raise CheckpointError(f"{Path(path).name}: not saved: {'; '.join(problems)}.")
    metadata.software = {
        "liverxai": "0.1.0",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    metadata.created = metadata.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    payload = {
        "format": FORMAT,
        "metadata": json.loads(json.dumps(asdict(metadata))),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint dictionary safely; clear errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(
            f"{path.name} is not a readable LiverXAI checkpoint (corrupt, truncated, or it "
            f"contains code, which is never executed): {error}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a LiverXAI checkpoint ({FORMAT} expected).")
    return payload


def load_checkpoint(
    path: str | Path, expected_architecture: str | None = None
) -> tuple[nn.Module, CheckpointMetadata]:
    """Rebuild the network from a checkpoint, in evaluation mode on the CPU.

    The metadata, the network it describes and the weights are checked first
    (``CheckpointError`` naming the file and what is wrong).
    """
    payload = read_checkpoint(path)
    name = Path(path).name
    metadata = check_metadata(payload.get("metadata"), name)
    state_dict = check_weights(payload.get("state_dict"), name)
    if expected_architecture and metadata.architecture != expected_architecture:
        raise CheckpointError(
            f"{name} holds a {metadata.architecture!r} network, not {expected_architecture!r}."
        )
    try:
        model = build_model(metadata.architecture, **metadata.architecture_kwargs)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{name}: cannot build its network: {error}") from error
    problems = _network_problems(model, metadata)
    if problems:
        raise CheckpointError(f"{name}: unusable metadata: {'; '.join(problems)}.")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{name}: its weights do not fit the {metadata.architecture!r} network "
            f"(another architecture or configuration?): {str(error).splitlines()[0]}"
        ) from error
    if metadata.cam_layer:  # measured for these weights: explain.default_cam_layer reads it
        model.measured_cam_layer = metadata.cam_layer
    return model.eval(), metadata
