"""Stopping a training run cleanly: a ``STOP`` file in the output folder, SIGTERM or SIGINT.

The trainer checks after every step (and between cases while it prepares data); the run then
ends with the last finished epoch saved in ``last.pt``, which ``--resume`` continues.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

STOP_FILE = "STOP"


class StopRequest:
    """Set by ``OUT/STOP`` appearing or by SIGTERM / SIGINT; checked after every step."""

    def __init__(self, out_dir: Path) -> None:
        self.stop_file = out_dir / STOP_FILE
        self.signalled = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def __exit__(self, *_exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _on_signal(self, _number, _frame) -> None:
        self.signalled = True

    def requested(self) -> bool:
        return self.signalled or self.stop_file.exists()


class StoppedWhilePreparing(Exception):
    """A stop was requested before the first epoch began."""
