"""One check-and-install flow for the Python packages LiverXAI needs (torch, MONAI, Captum,
matplotlib), used by both modules before any work that needs them and by their self-tests.

:func:`ensure` makes every decision; Slicer's dialogs and installers are passed in
(:meth:`Dialogs.from_slicer`, ``dependencies.Installers.from_slicer``), so the decisions are
tested without Qt:

- everything is installed: nothing is asked, nothing is shown;
- Slicer runs with ``--testing`` (a self-test on an extension build machine): nothing is
  installed unless ``LIVERXAI_INSTALL_IN_TESTS=1`` is set, and the outcome says why, for the
  self-test to be skipped with that reason (Slicer 5.12's ``pip_ensure`` would not install
  there either);
- otherwise the user is asked once (the plan's question, naming each package and how it is
  installed), the packages are installed, and at most one restart message follows: only when a
  package that was replaced had already been imported in this session. Slicer's own restart
  prompt is turned off (``pip_ensure(prompt_restart=False)``), so there is never a second one.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import dependencies

INSTALL_IN_TESTS = "LIVERXAI_INSTALL_IN_TESTS"
TITLE = "LiverXAI: install Python packages"


@dataclass(frozen=True)
class Dialogs:
    """How the flow talks to the user: ``confirm(text) -> bool``, ``info``, ``error``."""

    confirm: Callable[[str], bool]
    info: Callable[[str], object]
    error: Callable[[str], object]

    @classmethod
    def from_slicer(cls) -> Dialogs:
        """Slicer's message boxes (inside Slicer only)."""
        import slicer

        return cls(
            confirm=lambda text: bool(slicer.util.confirmOkCancelDisplay(text, windowTitle=TITLE)),
            info=lambda text: slicer.util.infoDisplay(text, windowTitle=TITLE),
            error=lambda text: slicer.util.errorDisplay(text, windowTitle=TITLE),
        )


@dataclass(frozen=True)
class Outcome:
    """The flow's result: ``ready`` to run; else ``reason`` says why not (for a log or a skipped
    test). ``restart`` names the replaced packages that were already imported."""

    ready: bool
    reason: str = ""
    installed: bool = False
    restart: tuple[str, ...] = ()


def imported_distributions(names: Iterable[str]) -> tuple[str, ...]:
    """Those of the distributions ``names`` with a top-level module already imported here."""
    wanted = {dependencies._canonical(name): name for name in names}
    found = set()
    for module, distributions in importlib.metadata.packages_distributions().items():
        if module in sys.modules:
            found |= {dependencies._canonical(d) for d in distributions} & set(wanted)
    return tuple(wanted[key] for key in wanted if key in found)


def restart_message(names: Iterable[str]) -> str:
    """The one restart message."""
    return (
        f"Restart 3D Slicer before using LiverXAI: {', '.join(names)} "
        f"{'was' if len(tuple(names)) == 1 else 'were'} upgraded, but this session still runs "
        "the earlier version."
    )


def ensure(
    dialogs: Dialogs,
    *,
    testing: bool = False,
    install_in_tests: bool = False,
    installers: dependencies.Installers | None = None,
    plan: dependencies.DependencyPlan | None = None,
) -> Outcome:
    """Check the packages and, when some are missing, install them after asking (see the
    module's description). ``plan`` defaults to ``dependencies.check()``."""
    plan = plan if plan is not None else dependencies.check()
    if plan.satisfied:
        return Outcome(True)
    if testing and not install_in_tests:
        return Outcome(
            False,
            f"{plan.summary()}. Slicer runs with --testing, where LiverXAI installs no packages: "
            f"install them first, or set {INSTALL_IN_TESTS}=1 to let the test install them.",
        )
    if not testing and not dialogs.confirm(plan.question()):
        return Outcome(False, f"Not installed, as you chose. {plan.summary()}")
    replaced = [m.name for m in (plan.torch, *plan.missing) if m is not None and m.installed]
    loaded = imported_distributions(replaced)
    try:
        dependencies.install(plan, installers)
    except Exception as error:  # pip's or the PyTorch extension's error, or still missing
        reason = f"Installing the Python packages failed: {error}"
        dialogs.error(reason)
        return Outcome(False, reason)
    if loaded:
        dialogs.info(restart_message(loaded))
    return Outcome(True, installed=True, restart=loaded)


def ensure_in_slicer() -> Outcome:
    """:func:`ensure` with Slicer's dialogs and installers, and its ``--testing`` flag."""
    import slicer

    return ensure(
        Dialogs.from_slicer(),
        testing=bool(slicer.app.testingEnabled()),
        install_in_tests=os.environ.get(INSTALL_IN_TESTS) == "1",
    )


def require_for_self_test(ensure_packages: Callable[[], Outcome] = ensure_in_slicer) -> None:
    """First thing in each module's self-test: skip it (``unittest.SkipTest``) with the reason on
    an unsupported Slicer or when the packages are missing and are not installed."""
    import unittest

    from . import slicer_version

    slicer_version.skip_test_if_unsupported()
    outcome = ensure_packages()
    if not outcome.ready:
        raise unittest.SkipTest(f"LiverXAI self-test skipped: {outcome.reason}")
