"""The model catalog: which trained networks exist, where their files are, their SHA-256.

``Resources/Models/models.json`` lists the bundled models (name, architecture, file,
sha256, description, training data, metrics). A model is used only after its file passes
its checksum. This module needs no torch, so Slicer can list models before torch exists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError

MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
CATALOG = MODELS_DIR / "models.json"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_catalog(catalog: str | Path = CATALOG) -> list[dict[str, Any]]:
    """Entries of the model catalog (name, file, sha256, description, ...)."""
    catalog = Path(catalog)
    if not catalog.is_file():
        return []
    return json.loads(catalog.read_text())["models"]


def resolve_model(name_or_path: str | Path, catalog: str | Path = CATALOG) -> Path:
    """Path of a catalog model (verified by SHA-256) or of a checkpoint file given directly."""
    for entry in read_catalog(catalog):
        if entry["name"] == str(name_or_path):
            path = Path(catalog).parent / entry["file"]
            if not path.is_file():
                raise CheckpointError(f"Model {entry['name']!r}: file {path} is missing.")
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise CheckpointError(
                    f"Model {entry['name']!r}: {path.name} fails its SHA-256 check "
                    f"(expected {entry['sha256'][:12]}…, got {actual[:12]}…); the file is "
                    "damaged or was replaced."
                )
            return path
    path = Path(name_or_path)
    if path.suffix in (".pt", ".pth") or path.exists():
        if not path.is_file():
            raise CheckpointError(f"Model file not found: {path}")
        return path
    names = ", ".join(e["name"] for e in read_catalog(catalog)) or "none"
    raise CheckpointError(f"Unknown model {str(name_or_path)!r}. Available: {names}.")
