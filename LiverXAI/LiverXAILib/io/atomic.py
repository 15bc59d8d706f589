"""Atomic file writes: write to a temporary file beside the target, then rename it into place.

A crash or a cancel never leaves a half-written output under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (mode 0666 & ~umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


STAGING_PREFIX = ".liverxai-partial-"  # a set of outputs being written (batch.py uses it too)


@contextlib.contextmanager
def staged_folder(out_dir: str | Path, last: str | None = None) -> Iterator[Path]:
    """Yield a private folder inside ``out_dir`` to write a set of output files into.

    On success every file is moved into ``out_dir`` (``last``, e.g. the report, moves last,
    so its presence means the set is complete); on a failure or an interruption the folder is
    removed and ``out_dir`` is left as it was (also removed if this call created it empty).
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out_dir))
    committed = False
    try:
        yield staging
        names = sorted(path.name for path in staging.iterdir())
        if last in names:
            names.append(names.pop(names.index(last)))
        for name in names:
            os.replace(staging / name, out_dir / name)
        committed = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not committed:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty


def check_writable_folder(out_dir: str | Path) -> None:
    """Raise ``InputError`` unless ``out_dir`` is (or can become) a folder one can write to.

    Checked before any work starts, so a long run never fails at its last step.
    """
    from ..errors import InputError

    out_dir = Path(out_dir)
    for parent in [out_dir, *out_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is" if parent == out_dir else f"lies under {parent}, which is"
                raise InputError(f"Output folder {out_dir} {where} a file, not a folder.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"Output folder {out_dir}: no permission to write in {parent}.")
            return
