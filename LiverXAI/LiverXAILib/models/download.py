"""Model files from outside the extension: download a listed model, or import a given file.

A catalog entry with a ``url`` is downloaded only on request (never during segmentation), in
chunks with progress and cancel, into a hidden temporary file of the download cache; its
SHA-256 is checked before the file is moved into place, so the cache holds verified files
only. A hospital without internet imports the file it was given instead: the listed file
fills the same cache, any other LiverXAI checkpoint is checked and registered in the user's
catalog. Needs no torch except to check an unlisted checkpoint on import.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import Cancelled, CheckpointError
from ..io.atomic import atomic_path
from .catalog import (
    DERIVED_KEYS,
    cached_download_path,
    check_download_url,
    read_catalog,
    register_model,
    sha256_file,
    unknown_model_error,
    validate_catalog,
)

CHUNK_BYTES = 1 << 18
TIMEOUT_SECONDS = 30.0

Progress = Callable[[float, str], None]


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _download_entry(entry_or_name: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(entry_or_name, str):
        entries = read_catalog()
        found = [entry for entry in entries if entry["name"] == entry_or_name]
        if not found:
            raise unknown_model_error(entry_or_name, entries)
        entry_or_name = found[0]
    entry = {k: v for k, v in entry_or_name.items() if k not in DERIVED_KEYS}
    validate_catalog({"models": [entry]}, "download")
    if "url" not in entry:
        raise ValueError(f"Model {entry['name']!r} is a local file; there is nothing to download.")
    return entry


def _fetch(
    entry: Mapping[str, Any], destination: Path, report: Progress, cancel: threading.Event | None
) -> str:
    """Stream the entry's URL into ``destination``; return the SHA-256 of what arrived."""
    name, url, limit = entry["name"], entry["url"], entry.get("size_bytes")
    digest, received = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "LiverXAI"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            check_download_url(response.geturl())  # a redirect must stay on https as well
            total = int(response.headers.get("Content-Length") or 0) or limit or 0
            if limit and total > limit:
                raise CheckpointError(
                    f"Model {name!r}: the server offers {_megabytes(total)}, more than the "
                    f"{_megabytes(limit)} listed; not downloaded."
                )
            with open(destination, "wb") as stream:
                while chunk := response.read(CHUNK_BYTES):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"Download of {name!r} was cancelled.")
                    digest.update(chunk)
                    stream.write(chunk)
                    received += len(chunk)
                    if limit and received > limit:
                        raise CheckpointError(
                            f"Model {name!r}: the download exceeds the {_megabytes(limit)} "
                            "listed; stopped."
                        )
                    of_total = f" of {_megabytes(total)}" if total else ""
                    report(
                        min(received / total, 1.0) if total else 0.0,
                        f"Downloading {name}: {_megabytes(received)}{of_total}",
                    )
    except urllib.error.HTTPError as error:
        raise CheckpointError(
            f"Download of model {name!r} failed: {url} answered HTTP {error.code} ({error.reason})."
        ) from error
    except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, disk full
        reason = getattr(error, "reason", None) or error
        raise CheckpointError(
            f"Download of model {name!r} from {url} failed: {reason}. Check the network, or "
            "import the model file with Import model…."
        ) from error
    return digest.hexdigest()


def download_model(
    entry_or_name: Mapping[str, Any] | str,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Download a listed model (catalog name or entry) into the cache; return its path.

    ``progress(fraction, message)`` follows the bytes; setting ``cancel`` raises
    ``Cancelled``. The file is verified by SHA-256 before it is moved into place, so a
    mismatch (``CheckpointError``, naming both checksums), a cancel or a failure leaves
    nothing behind. A verified cached file is returned without network access.
    """
    entry = _download_entry(entry_or_name)
    report = progress or (lambda _fraction, _message: None)
    target = cached_download_path(entry, cache_dir)
    if target.is_file():
        if sha256_file(target) == entry["sha256"]:
            report(1.0, f"{entry['name']}: already downloaded and verified")
            return target
        target.unlink()  # damaged or replaced: fetch it again
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"Download of {entry['name']!r} was cancelled.")
    report(0.0, f"Downloading {entry['name']}")
    with atomic_path(target, suffix=".part") as temporary:
        actual = _fetch(entry, temporary, report, cancel)
        if actual != entry["sha256"]:
            raise CheckpointError(
                f"Model {entry['name']!r}: the downloaded file fails its SHA-256 check "
                f"(expected {entry['sha256']}, got {actual}); it was discarded."
            )
    report(1.0, f"{entry['name']}: downloaded and verified ({_megabytes(target.stat().st_size)})")
    return target


def _unused_name(stem: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:56] or "imported-model"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    return name


def import_model(
    path: str | Path, name: str | None = None, description: str = ""
) -> dict[str, Any]:
    """Add a model file given on a USB stick or by e-mail; return its catalog entry.

    The file listed for download (same SHA-256) goes into the download cache, which makes
    that listed model available. A file already in the catalog is left as it is. Any other
    file must load as a LiverXAI checkpoint (read safely, never executing code; its metadata
    and weights checked by ``checkpoints.load_checkpoint``) and is registered in the user's
    catalog under ``name`` (default: from the file name, not replacing an existing model).
    Raises ``CheckpointError`` for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Model file not found: {path}")
    digest = sha256_file(path)
    entries = read_catalog()
    for entry in entries:
        if entry["sha256"] != digest:
            continue
        if entry["source"] == "download":
            target = cached_download_path(entry)
            with atomic_path(target, suffix=".part") as temporary:
                shutil.copyfile(path, temporary)
                if sha256_file(temporary) != digest:
                    raise CheckpointError(f"{path.name} changed while it was being imported.")
            return {**entry, "path": str(target), "available": True}
        if entry["available"]:
            return entry
    if name is None:
        name = _unused_name(path.stem, {entry["name"] for entry in entries})
    return register_checkpoint(
        path, name, lambda _metadata: description or f"Imported from {path.name}."
    )


def register_checkpoint(
    path: str | Path, name: str, describe: Callable[[Any], str]
) -> dict[str, Any]:
    """List a checkpoint in the user's catalog after the checks of every model LiverXAI loads.

    ``load_checkpoint`` checks the metadata, the network it describes and the weights
    (``CheckpointError`` naming the file); ``describe(metadata)`` gives the description.
    Used by ``models import`` and by the trainer's ``--register``.
    """
    from .checkpoints import load_checkpoint  # torch is needed only here

    _, metadata = load_checkpoint(path)
    return register_model(path, name, asdict(metadata), describe(metadata))
