"""Ctrl-C and SIGTERM as a cancel request, for the headless commands.

The first signal sets a ``threading.Event`` that the Logic, the batch runner and the output
writers check, so the run stops at the next step and removes what it had begun; a second
Ctrl-C raises ``KeyboardInterrupt`` at once (the output writers still remove their partial
files on the way out).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator


class SignalCancel(threading.Event):
    """A cancel event that remembers which signal set it ("SIGINT", "SIGTERM")."""

    signal_name = ""


@contextlib.contextmanager
def cancel_on_signals(what: str | None = None) -> Iterator[SignalCancel]:
    """Yield an event that SIGINT or SIGTERM sets; the previous handlers come back after.

    ``what`` (e.g. "stopping after this case") is printed when a signal arrives; without it
    the caller says what happened once the run has stopped.
    """
    cancel = SignalCancel()
    previous = {}

    def on_signal(number: int, _frame: object) -> None:
        cancel.signal_name = signal.Signals(number).name
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once
        if what:
            print(f"\n{cancel.signal_name}: {what}", file=sys.stderr, flush=True)

    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, on_signal)
    try:
        yield cancel
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
