"""Stand-ins for the parts of the Slicer application the module files touch at import, in their
constructors and in a Widget's ``setup`` before the .ui is loaded: ``slicer.app`` (its version
and ``connect``), ``slicer.util``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper`` and ``qt``. The slicer-core wheel has none of them (no Qt, no
application); the real ``vtk`` is used.

``install(major, minor)`` puts them into ``sys.modules``; meant for a fresh interpreter
(``test_slicer_version.py`` runs it in a subprocess), as it replaces the ``slicer`` package.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class Recorder:
    """Calls made to the fakes, in order: (what, arguments)."""

    calls: list[tuple[str, tuple]] = []


class FakeApp:
    def __init__(self, major: int, minor: int) -> None:
        self.majorVersion, self.minorVersion = major, minor

    def connect(self, signal: str, slot: Any) -> None:
        Recorder.calls.append(("connect", (signal, slot)))

    def testingEnabled(self) -> bool:
        return True


class FakeLayout:
    def __init__(self) -> None:
        self.widgets: list[Any] = []

    def addWidget(self, widget: Any) -> None:
        self.widgets.append(widget)

    def addStretch(self, factor: int = 0) -> None:
        pass


class FakeLabel:
    def __init__(self, text: str) -> None:
        self.text, self.wordWrap = text, False


class ScriptedLoadableModule:
    def __init__(self, parent: Any) -> None:
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent: Any = None) -> None:
        self.parent = parent
        self.layout = FakeLayout()

    def setup(self) -> None:
        pass


class ScriptedLoadableModuleTest:
    pass


class VTKObservationMixin:
    def __init__(self) -> None:
        self.observations: list[Any] = []

    def addObserver(self, *args: Any) -> None:
        self.observations.append(args)

    def removeObservers(self) -> None:
        self.observations.clear()


def _identity(cls: type) -> type:
    return cls


def _annotation(*args: Any, **kwargs: Any) -> tuple:
    return args


def install(major: int, minor: int) -> None:
    """Replace ``slicer`` and ``qt`` in ``sys.modules`` by the stand-ins of Slicer major.minor."""
    slicer = types.ModuleType("slicer")
    slicer.__path__ = []  # a package, so that "slicer.util" imports resolve in sys.modules
    slicer.app = FakeApp(major, minor)
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = VTKObservationMixin
    util.errorDisplay = lambda text, **kwargs: Recorder.calls.append(("errorDisplay", (text,)))
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModule = ScriptedLoadableModule
    scripted.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = _identity
    wrapper.Choice = wrapper.WithinRange = _annotation
    slicer.util = util
    slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (), {})
    qt = types.ModuleType("qt")
    qt.QLabel = FakeLabel
    sys.modules.update(
        {
            "slicer": slicer,
            "slicer.util": util,
            "slicer.ScriptedLoadableModule": scripted,
            "slicer.parameterNodeWrapper": wrapper,
            "qt": qt,
        }
    )


def parent() -> types.SimpleNamespace:
    """A module's ``parent`` (qSlicerScriptedLoadableModule): attributes only."""
    return types.SimpleNamespace(helpText="", path="")
