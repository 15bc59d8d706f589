"""Which 3D Slicer LiverXAI supports, and the one message shown on an older one.

LiverXAI needs Slicer 5.10 or later: the library is written for Python 3.10 and later
(``pyproject.toml``), Slicer 5.10 is the first release whose Python is new enough (3.12), and
Slicer 5.8 has Python 3.9. The same minimum is declared in ``CMakeLists.txt`` (a configure
error), ``LiverXAI.s4ext`` and the README.

This module, ``LiverXAILib/__init__.py`` and the two module files stay importable on Python 3.9
(``Testing/test_slicer_version.py`` checks it), so that on an older Slicer the modules load,
say which Slicer is needed and do nothing else, instead of failing at import with a
``TypeError`` or ``SyntaxError``. The module files import the rest of the library only when
:func:`supported`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)  # what LiverXAILib needs; Slicer 5.10 and later ship Python 3.12
SLICER_PYTHON = "3.12"
DOWNLOAD_URL = "https://download.slicer.org"
TITLE = "LiverXAI: Slicer version"

_announced = False  # one message for both modules


def version_text(version: tuple[int, ...]) -> str:
    """``(5, 10)`` -> ``"5.10"``."""
    return ".".join(str(part) for part in version)


def running_slicer_version(app: Any = None) -> tuple[int, int] | None:
    """(major, minor) of the running Slicer application (``slicer.app``); ``None`` outside it
    (the slicer-core wheel has no application)."""
    if app is None:
        try:
            import slicer
        except ImportError:
            return None
        app = getattr(slicer, "app", None)
    try:
        return int(app.majorVersion), int(app.minorVersion)
    except (AttributeError, TypeError, ValueError):
        return None


def problem(slicer_version: tuple[int, ...] | None, python_version: tuple[int, ...]) -> str | None:
    """Why LiverXAI cannot run with this Slicer and Python (one sentence naming the version
    needed), or ``None`` when it can."""
    python = version_text(tuple(python_version[:2]))
    needed = version_text(MINIMUM_SLICER)
    if slicer_version is not None and tuple(slicer_version[:2]) < MINIMUM_SLICER:
        return (
            f"LiverXAI needs 3D Slicer {needed} or later; this is Slicer "
            f"{version_text(tuple(slicer_version[:2]))} (Python {python}). Install Slicer "
            f"{needed} or later from {DOWNLOAD_URL} and install LiverXAI there. The modules do "
            "nothing in this Slicer."
        )
    if tuple(python_version[:2]) < MINIMUM_PYTHON:
        return (
            f"LiverXAI needs Python {version_text(MINIMUM_PYTHON)} or later (3D Slicer {needed} "
            f"and later ship Python {SLICER_PYTHON}); this Python is {python}."
        )
    return None


def current_problem() -> str | None:
    """:func:`problem` for the running Slicer (if any) and Python."""
    return problem(running_slicer_version(), tuple(sys.version_info[:2]))


def supported() -> bool:
    """Whether LiverXAI can run here."""
    return current_problem() is None


def announce(parent: Any = None) -> bool:
    """Called by each module's constructor: on an unsupported Slicer, put the message at the top
    of the module's help and show it once for both modules (a dialog after startup, and the
    log). Returns whether this Slicer is supported."""
    global _announced
    message = current_problem()
    if message is None:
        return True
    if parent is not None:
        parent.helpText = f"<p><b>{message}</b></p>" + str(getattr(parent, "helpText", ""))
    if not _announced:
        _announced = True
        logging.error(message)
        try:
            import slicer

            slicer.app.connect(
                "startupCompleted()",
                lambda: slicer.util.errorDisplay(message, windowTitle=TITLE),
            )
        except (ImportError, AttributeError):  # no application: the log line is the message
            pass
    return False


def show_in_panel(layout: Any) -> bool:
    """Called first by each Widget's ``setup``: on an unsupported Slicer, show the message in the
    module panel instead of the controls and return True (the caller then stops)."""
    message = current_problem()
    if message is None:
        return False
    import qt

    label = qt.QLabel(message)
    label.wordWrap = True
    layout.addWidget(label)
    layout.addStretch(1)
    return True


def skip_test_if_unsupported() -> None:
    """In a self-test: skip (``unittest.SkipTest``) with the message on an unsupported Slicer."""
    message = current_problem()
    if message is not None:
        import unittest

        raise unittest.SkipTest(message)


class UnsupportedPanel:
    """Stands in for a module's panel (and its self-test checks) on an older Slicer: the
    Widget shows the message only (``show_in_panel``), so entering, leaving and cleaning up
    do nothing."""

    def enter(self) -> None:
        pass

    def exit(self) -> None:
        pass

    def cleanup(self) -> None:
        pass
