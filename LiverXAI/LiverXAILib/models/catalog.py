"""The model catalog: which trained networks exist, where their files are, their SHA-256.

``Resources/Models/models.json`` (format: ``models.schema.json`` beside it) lists the models:
name, architecture, input size, classes, training data, metrics, SHA-256 and either ``file``
(shipped with the extension) or ``url`` (downloaded on request into the user's model folder,
see ``model_download.py``). Models the user trains or imports are registered in a second
catalog of the same format in the user's model folder (``$LIVERXAI_MODELS_DIR`` or
``~/.liverxai/models``), so the Segment & Explain module lists them too. A model is used only
after its file passes its checksum. A user catalog that cannot be read never hides the bundled
models: it is left out, logged, reported by :func:`user_catalog_problem` (``models list``
prints it) and named when one of its models is asked for. This module needs no torch, so
Slicer can list models before torch exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..constants import CLASS_NAMES
from ..errors import CheckpointError
from ..io.atomic import atomic_path

MODELS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
CATALOG = MODELS_DIR / "models.json"
SCHEMA = MODELS_DIR / "models.schema.json"

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
FILE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"  # a bare file name: no folder, no "..".
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # plain http is accepted only from these
DERIVED_KEYS = ("path", "available", "source")  # added by read_catalog, never stored

_log = logging.getLogger(__name__)
_warned: set[str] = set()


class CatalogError(CheckpointError, ValueError):
    """A catalog file is unreadable or an entry breaks the catalog format."""


def sha256_file(path: str | Path) -> str:
    """The file's SHA-256 as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def user_models_dir() -> Path:
    """The user's model folder: ``$LIVERXAI_MODELS_DIR`` or ``~/.liverxai/models``."""
    configured = os.environ.get("LIVERXAI_MODELS_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".liverxai" / "models"


def user_catalog_path() -> Path:
    """The user's catalog: ``user_models_dir()/models.json``."""
    return user_models_dir() / "models.json"


def download_cache_dir() -> Path:
    """Where downloaded (and imported listed) models are kept: ``user_models_dir()/downloads``."""
    return user_models_dir() / "downloads"


def cached_download_path(entry: Mapping[str, Any], cache_dir: str | Path | None = None) -> Path:
    """The cache file of a download entry (it exists only once downloaded or imported)."""
    folder = Path(cache_dir) if cache_dir is not None else download_cache_dir()
    return folder / f"{entry['name']}-{entry['sha256'][:12]}.pt"


def check_download_url(url: str) -> None:
    """Refuse anything but https (plain http only from this computer, for tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in LOCAL_HOSTS:
        return
    raise CatalogError(f"Refusing to download from {url!r}: only https:// addresses are allowed.")


# --- Runtime check of a catalog (the full format is models.schema.json) -------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


_OPTIONAL_FIELDS = {  # field: (check, what it must be)
    "architecture": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "input_size": (
        lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(n) and n > 0 for n in v),
        "two positive integers [height, width]",
    ),
    "num_slices": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "classes": (_string_list, "a list of class names"),
    "training_data": (_string_list, "a list of strings"),
    "description": (lambda v: isinstance(v, str), "a string"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
    "size_bytes": (lambda v: _is_int(v) and v > 0, "a positive integer"),
}


def _check_entry(entry: Any) -> None:
    if not isinstance(entry, dict):
        raise CatalogError("is not an object")
    for field in ("name", "sha256"):
        if field not in entry:
            raise CatalogError(f"field {field!r} is missing")
    name = entry.get("name")
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise CatalogError(
            f"field 'name' is {name!r}: use up to 64 letters, digits, '.', '_' or '-'"
        )
    sha = entry.get("sha256")  # the schema asks for 64 digits; a short one fails at use
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{1,64}", sha):
        raise CatalogError(
            f"field 'sha256' is {sha!r}: give the file's SHA-256 (64 lowercase hex digits)"
        )
    has_file, has_url = "file" in entry, "url" in entry
    if has_file == has_url:
        raise CatalogError("give exactly one of 'file' (a local file) or 'url' (a download)")
    if has_file:
        if not isinstance(entry["file"], str) or not re.fullmatch(FILE_PATTERN, entry["file"]):
            raise CatalogError(
                f"field 'file' is {entry['file']!r}; expected a file name beside the "
                "catalog (no folders)"
            )
        if "size_bytes" in entry:
            raise CatalogError("field 'size_bytes' belongs to 'url' entries only")
    else:
        if not isinstance(entry["url"], str):
            raise CatalogError(f"field 'url' is {entry['url']!r}; expected a web address")
        try:
            check_download_url(entry["url"])
        except CatalogError as error:
            raise CatalogError(f"field 'url': {error}") from None
    for field, (check, wanted) in _OPTIONAL_FIELDS.items():
        if field in entry and not check(entry[field]):
            raise CatalogError(f"field {field!r} is {entry[field]!r}; expected {wanted}")


def validate_catalog(data: Any, origin: str = "model catalog") -> None:
    """Check a parsed catalog; raise ``CatalogError`` naming the entry and field at fault.

    A light check of what LiverXAI relies on (names, checksums, ``file`` xor an https
    ``url``, field types); ``models.schema.json`` describes the full format.
    """
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise CatalogError(f"{origin}: expected an object with a 'models' list.")
    seen: set[str] = set()
    for index, entry in enumerate(data["models"]):
        label = f"model #{index + 1}"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']!r})"
        try:
            _check_entry(entry)
        except CatalogError as error:
            raise CatalogError(f"{origin}: {label}: {error}.") from None
        if entry["name"] in seen:
            raise CatalogError(f"{origin}: {label}: the name is listed twice.")
        seen.add(entry["name"])


# --- Reading ------------------------------------------------------------------------------


def _load_json(catalog: Path) -> dict[str, Any]:
    try:
        data = json.loads(catalog.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CatalogError(f"{catalog}: not valid JSON ({error}).") from error
    except OSError as error:
        raise CatalogError(f"{catalog}: cannot be read ({error}).") from error
    validate_catalog(data, str(catalog))
    return data


def _stored(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in DERIVED_KEYS}


def _read_one(catalog: Path) -> list[dict[str, Any]]:
    if not catalog.is_file():
        return []
    bundled = catalog.resolve() == CATALOG.resolve()
    entries = []
    for entry in _load_json(catalog)["models"]:
        if "url" in entry:
            cached = cached_download_path(entry)
            path, source = (str(cached) if cached.is_file() else None), "download"
        else:
            path, source = str(catalog.parent / entry["file"]), "bundled" if bundled else "user"
        available = path is not None and Path(path).is_file()
        entries.append({**entry, "path": path, "available": available, "source": source})
    return entries


def _how_to_fix(error: CatalogError) -> str:
    return (
        f"{error} Fix that file or move it away (then import your models again); until then "
        "only the bundled models are listed."
    )


def user_catalog_problem() -> str | None:
    """Why the user's catalog cannot be used (one line, with how to fix it), or None."""
    try:
        _read_one(user_catalog_path())
    except CatalogError as error:
        return _how_to_fix(error)
    return None


def read_catalog(catalog: str | Path | None = None, warn: bool = True) -> list[dict[str, Any]]:
    """Catalog entries, each with three added keys.

    ``path``: the local file (``None`` for a download not yet fetched); ``available``: whether
    that file exists (its checksum is verified when used); ``source``: ``"bundled"``,
    ``"user"`` or ``"download"``. Without ``catalog``: the bundled models, then the user's
    registered models (a user model named like a bundled one is ignored); a user catalog that
    cannot be read is left out, with a warning logged once unless ``warn`` is false (see
    :func:`user_catalog_problem`). Raises ``CatalogError`` for a malformed ``catalog`` or
    bundled catalog.
    """
    if catalog is not None:
        return _read_one(Path(catalog))
    bundled = _read_one(CATALOG)
    names = {entry["name"] for entry in bundled}
    try:
        user = _read_one(user_catalog_path())
    except CatalogError as error:
        message = _how_to_fix(error)
        if warn and message not in _warned:
            _warned.add(message)
            _log.warning("%s", message)
        user = []
    return bundled + [entry for entry in user if entry["name"] not in names]


def unknown_model_error(name: str, entries: list[dict[str, Any]]) -> CheckpointError:
    """The error for a model name no catalog lists; names a user catalog that cannot be read."""
    names = ", ".join(entry["name"] for entry in entries) or "none"
    problem = user_catalog_problem()
    if problem is not None:
        return CatalogError(f"Model {name!r} is not available: {problem}")
    return CheckpointError(f"Unknown model {name!r}. Available: {names}.")


# --- Registering --------------------------------------------------------------------------


def register_model(
    checkpoint: str | Path,
    name: str,
    metadata: dict[str, Any],
    description: str = "",
    models_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Copy a trained checkpoint into the user's model folder and list it in its catalog.

    ``metadata`` is the checkpoint's metadata dictionary (architecture, input size, ...);
    missing sizes and classes take the defaults ``CheckpointMetadata`` loads them with.
    Registering a name again replaces that model (a retrained version); bundled names are
    reserved. Returns the new catalog entry (with ``path``, ``available``, ``source``).
    """
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"Model name {name!r}: use letters, digits, '.', '_' or '-'.")
    if any(entry["name"] == name for entry in _read_one(CATALOG)):
        raise ValueError(f"Model name {name!r} is taken by a bundled model; choose another.")
    if not metadata.get("architecture"):
        raise ValueError(
            f"Cannot register {Path(checkpoint).name}: its metadata names no architecture "
            "(not a LiverXAI checkpoint?)."
        )
    folder = Path(models_dir) if models_dir is not None else user_models_dir()
    digest = sha256_file(checkpoint)
    target = folder / f"{name}-{digest[:12]}.pt"
    entry = {
        "name": name,
        "architecture": str(metadata["architecture"]),
        "file": target.name,
        "sha256": digest,
        "input_size": [int(n) for n in metadata.get("input_size") or (128, 128)],
        "num_slices": int(metadata.get("num_slices", 1)),
        "classes": [str(c) for c in metadata.get("class_names") or CLASS_NAMES],
        "training_data": [str(item) for item in metadata.get("training_data", [])],
        "description": description or f"Trained with LiverXAI from {Path(checkpoint).name}.",
        "metrics": dict(metadata.get("metrics", {})),
    }
    catalog = folder / "models.json"
    try:
        previous = _read_one(catalog)
    except CatalogError as error:
        raise CatalogError(f"Cannot add model {name!r}: {_how_to_fix(error)}") from None
    entries = [_stored(e) for e in previous if e["name"] != name] + [entry]
    validate_catalog({"models": entries}, str(catalog))
    # The file name carries the checksum: the catalog never points at a half-replaced file,
    # and the previous version is removed only after the catalog names the new one.
    with atomic_path(target, suffix=".pt") as temporary:
        shutil.copyfile(checkpoint, temporary)
    with atomic_path(catalog, suffix=".json") as temporary:
        temporary.write_text(json.dumps({"models": entries}, indent=2), encoding="utf-8")
    for old in previous:
        if old["name"] == name and "file" in old and old["file"] != target.name:
            Path(old["path"]).unlink(missing_ok=True)
    return {**entry, "path": str(target), "available": True, "source": "user"}


# --- Resolving ----------------------------------------------------------------------------


def _verified(entry: Mapping[str, Any], path: Path) -> Path:
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        hint = "download it again" if "url" in entry else "the file is damaged or was replaced"
        raise CheckpointError(
            f"Model {entry['name']!r}: {path.name} fails its SHA-256 check "
            f"(expected {entry['sha256'][:12]}…, got {actual[:12]}…); {hint}."
        )
    return path


def resolve_model(name_or_path: str | Path, catalog: str | Path | None = None) -> Path:
    """Path of a catalog model (verified by SHA-256) or of a checkpoint file given directly.

    A download entry resolves only once downloaded (or imported); nothing is downloaded here.
    """
    for entry in read_catalog(catalog):
        if entry["name"] != str(name_or_path):
            continue
        if entry["path"] is None:
            raise CheckpointError(
                f"Model {entry['name']!r} is not downloaded yet: download it first (Download "
                "in Segment & Explain), or, without internet, add the file you were given "
                "with Import model…."
            )
        path = Path(entry["path"])
        if not path.is_file():
            raise CheckpointError(f"Model {entry['name']!r}: file {path} is missing.")
        return _verified(entry, path)
    path = Path(name_or_path)
    if path.suffix in (".pt", ".pth") or path.exists():
        if not path.is_file():
            raise CheckpointError(f"Model file not found: {path}")
        return path
    entries = read_catalog(catalog)
    if catalog is not None:
        names = ", ".join(entry["name"] for entry in entries) or "none"
        raise CheckpointError(f"Unknown model {str(name_or_path)!r}. Available: {names}.")
    raise unknown_model_error(str(name_or_path), entries)
