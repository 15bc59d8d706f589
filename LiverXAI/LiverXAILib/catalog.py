"""The model catalog: which trained networks exist, where their files are, their SHA-256.

``Resources/Models/models.json`` lists the bundled models (name, architecture, file,
sha256, description, training data, metrics). Models the user trains are registered in a
second catalog of the same format in the user's model folder (``$LIVERXAI_MODELS_DIR`` or
``~/.liverxai/models``), so the Segment & Explain module lists them too. A model is used only
after its file passes its checksum. This module needs no torch, so Slicer can list models
before torch exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .errors import CheckpointError

MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
CATALOG = MODELS_DIR / "models.json"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def user_models_dir() -> Path:
    """The user's model folder: ``$LIVERXAI_MODELS_DIR`` or ``~/.liverxai/models``."""
    configured = os.environ.get("LIVERXAI_MODELS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".liverxai" / "models"


def _read_one(catalog: Path) -> list[dict[str, Any]]:
    if not catalog.is_file():
        return []
    entries = json.loads(catalog.read_text()).get("models", [])
    return [{**entry, "path": str(catalog.parent / entry["file"])} for entry in entries]


def read_catalog(catalog: str | Path | None = None) -> list[dict[str, Any]]:
    """Catalog entries (name, file, sha256, ..., and ``path``, the file's full path).

    Without ``catalog``: the bundled models, then the user's registered models.
    """
    if catalog is not None:
        return _read_one(Path(catalog))
    bundled = _read_one(CATALOG)
    names = {entry["name"] for entry in bundled}
    user = [e for e in _read_one(user_models_dir() / "models.json") if e["name"] not in names]
    return bundled + user


def register_model(
    checkpoint: str | Path,
    name: str,
    metadata: dict[str, Any],
    description: str = "",
    models_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Copy a trained checkpoint into the user's model folder and list it in its catalog.

    ``metadata`` is the checkpoint's metadata dictionary (architecture, input size, ...).
    Registering a name again replaces that model (a retrained version); bundled names are
    reserved. Returns the new catalog entry.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise ValueError(f"Model name {name!r}: use letters, digits, '.', '_' or '-'.")
    if any(entry["name"] == name for entry in _read_one(CATALOG)):
        raise ValueError(f"Model name {name!r} is taken by a bundled model; choose another.")
    folder = Path(models_dir) if models_dir is not None else user_models_dir()
    digest = sha256_file(checkpoint)
    # The file name carries the checksum: the catalog never points at a half-replaced file,
    # and the previous version is removed only after the catalog names the new one.
    target = folder / f"{name}-{digest[:12]}.pt"
    with atomic_path(target, suffix=".pt") as temporary:
        shutil.copyfile(checkpoint, temporary)
    entry = {
        "name": name,
        "architecture": metadata.get("architecture", ""),
        "file": target.name,
        "sha256": digest,
        "input_size": list(metadata.get("input_size", [])),
        "num_slices": metadata.get("num_slices", 1),
        "classes": list(metadata.get("class_names", [])),
        "training_data": list(metadata.get("training_data", [])),
        "description": description or f"Trained with LiverXAI from {Path(checkpoint).name}.",
        "metrics": metadata.get("metrics", {}),
    }
    catalog = folder / "models.json"
    previous = _read_one(catalog)
    entries = [{k: v for k, v in e.items() if k != "path"} for e in previous if e["name"] != name]
    with atomic_path(catalog, suffix=".json") as temporary:
        temporary.write_text(json.dumps({"models": entries + [entry]}, indent=2))
    for old in previous:
        if old["name"] == name and old["file"] != target.name:
            Path(old["path"]).unlink(missing_ok=True)
    return {**entry, "path": str(target)}


def resolve_model(name_or_path: str | Path, catalog: str | Path | None = None) -> Path:
    """Path of a catalog model (verified by SHA-256) or of a checkpoint file given directly."""
    for entry in read_catalog(catalog):
        if entry["name"] == str(name_or_path):
            path = Path(entry["path"])
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
