"""Model checkpoints: state dict plus metadata, loaded without executing code.

A checkpoint is a plain dictionary ``{"format": ..., "metadata": {...}, "state_dict": {...}}``
(optionally with training state for resuming) saved with ``torch.save`` and always read with
``torch.load(..., weights_only=True)``, so a malicious file cannot run code. Files are written
atomically (temporary file, then rename). The bundled models are listed with their SHA-256 in
``Resources/Models/models.json`` and verified before use.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .constants import CLASS_NAMES, DEFAULT_HU_WINDOW
from .errors import CheckpointError
from .networks import build_model
from .preprocessing import SliceInputSpec

FORMAT = "liverxai-checkpoint-1"


@dataclass
class CheckpointMetadata:
    """Everything needed to rebuild, feed and judge a trained network."""

    architecture: str
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int] = (128, 128)
    hu_window: tuple[float, float] = DEFAULT_HU_WINDOW
    num_slices: int = 1
    class_names: tuple[str, ...] = CLASS_NAMES
    training_data: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    software: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def input_spec(self) -> SliceInputSpec:
        return SliceInputSpec(tuple(self.hu_window), tuple(self.input_size), self.num_slices)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMetadata:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("input_size", "hu_window", "class_names"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    metadata: CheckpointMetadata,
    training_state: dict[str, Any] | None = None,
) -> None:
    """Save the model's weights with metadata (and optional training state) atomically."""
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
    """Rebuild the network from a checkpoint, in evaluation mode on the CPU."""
    payload = read_checkpoint(path)
    name = Path(path).name
    try:
        metadata = CheckpointMetadata.from_dict(payload["metadata"])
        state_dict = payload["state_dict"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{name}: incomplete checkpoint metadata ({error}).") from error
    if tuple(metadata.class_names) != CLASS_NAMES:
        raise CheckpointError(
            f"{name} predicts {list(metadata.class_names)}; LiverXAI needs {list(CLASS_NAMES)}."
        )
    if expected_architecture and metadata.architecture != expected_architecture:
        raise CheckpointError(
            f"{name} holds a {metadata.architecture!r} network, not {expected_architecture!r}."
        )
    try:
        model = build_model(metadata.architecture, **metadata.architecture_kwargs)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{name}: cannot build its network: {error}") from error
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{name}: its weights do not fit the {metadata.architecture!r} network "
            f"(another architecture or configuration?): {str(error).splitlines()[0]}"
        ) from error
    return model.eval(), metadata
