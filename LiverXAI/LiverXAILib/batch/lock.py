"""An exclusive lock on a batch output folder: one LiverXAI run writes into a folder at a time.

``output_folder_lock(folder)`` holds ``folder/.liverxai.lock`` for a whole run and removes it
at the end. Where ``fcntl`` exists (Linux, macOS) the lock is ``flock`` on that file: the
system drops it when its process ends, however it ends, so a crashed or killed run never
blocks the next one. Elsewhere (Windows) the file is created exclusively (``O_CREAT|O_EXCL``)
and holds its owner's pid and host; a lock whose process is gone (same host) or that has
stayed empty for ``EMPTY_LOCK_GRACE_S`` is stale and taken over. A second run, in another
process or in another thread of this one, gets ``OutputFolderLocked`` at once, naming the
folder and the holder's pid.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import InputError

try:
    import fcntl
except ImportError:  # Windows: the exclusive-file fallback
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".liverxai.lock"
EMPTY_LOCK_GRACE_S = 30.0  # an exclusive lock file is empty only while its owner starts

log = logging.getLogger(__name__)
_held: set[str] = set()  # folders locked by this process (flock may not see its own locks)
_held_guard = threading.Lock()


class OutputFolderLocked(InputError):
    """Another LiverXAI run is writing into the output folder."""

    def __init__(self, folder: Path, owner: str) -> None:
        super().__init__(
            f"Another LiverXAI run ({owner}) is writing into {folder}; wait until it has "
            "finished, or choose another output folder."
        )
        self.folder = folder
        self.owner = owner


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (never signals or stops it)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _owner_line() -> str:
    return f"{os.getpid()} {socket.gethostname()}\n"


def _parse_owner(text: str) -> tuple[int | None, str]:
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    return pid, parts[1] if len(parts) > 1 else ""


def describe_owner(text: str) -> str:
    """ "process 1234" (", on host H" for another machine) from a lock file's content."""
    pid, host = _parse_owner(text)
    if pid is None:
        return "process unknown, starting"
    return f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _lock_with_flock(path: Path) -> Callable[[], None]:
    """``flock`` the lock file; returns the function that removes and releases it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            owner = os.read(fd, 256).decode("utf-8", "replace")
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputFolderLocked(path.parent, describe_owner(owner)) from None
            log.warning("Cannot lock %s (%s): using an exclusive lock file instead", path, error)
            if not owner.strip():  # the empty file just created here
                path.unlink(missing_ok=True)
            return _lock_with_exclusive_file(path)
        if _same_file(fd, path):  # not a file its previous holder removed as we opened it
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, _owner_line().encode())

    def release() -> None:
        try:
            path.unlink(missing_ok=True)  # while still locked: the next run makes a new one
        finally:
            os.close(fd)

    return release


def _is_stale(path: Path, text: str) -> bool:
    pid, host = _parse_owner(text)
    if pid is None:
        try:
            return time.time() - path.stat().st_mtime > EMPTY_LOCK_GRACE_S
        except FileNotFoundError:
            return True
    if host and host != socket.gethostname():
        return False  # its process cannot be checked from here
    # this process holds no lock on the folder (``_held``): its own pid is a leftover too
    return pid == os.getpid() or not pid_alive(pid)


def _lock_with_exclusive_file(path: Path) -> Callable[[], None]:
    """Create the lock file exclusively (taking over a stale one); returns its release."""
    owner = _owner_line()
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:  # released meanwhile
                continue
            if attempt == 0 and _is_stale(path, text):
                log.warning("Removing the stale lock %s (%s)", path, describe_owner(text))
                path.unlink(missing_ok=True)
                continue
            raise OutputFolderLocked(path.parent, describe_owner(text)) from None
        try:
            os.write(fd, owner.encode())
        finally:
            os.close(fd)
        break
    else:
        raise OutputFolderLocked(path.parent, "another process, starting")

    def release() -> None:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == owner:  # still ours
                path.unlink()

    return release


@contextlib.contextmanager
def output_folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of an existing output folder; yields the lock file's path.

    Raises ``OutputFolderLocked`` (an ``InputError``) at once if another run holds it.
    """
    folder = Path(folder)
    key = os.path.normcase(str(folder.resolve()))
    with _held_guard:
        if key in _held:
            raise OutputFolderLocked(folder, f"process {os.getpid()}, this one")
        _held.add(key)
    try:
        path = folder / LOCK_FILE
        release = _lock_with_flock(path) if fcntl is not None else _lock_with_exclusive_file(path)
        try:
            yield path
        finally:
            release()
    finally:
        with _held_guard:
            _held.discard(key)
