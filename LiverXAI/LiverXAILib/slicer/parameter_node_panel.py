"""What both LiverXAI panels share: the .ui, the parameter node and the scene's close events.

A panel is mixed into a module's Widget (``class LiverXAIWidget(SegmentExplainPanel,
ScriptedLoadableModuleWidget)``): it loads the module's .ui, keeps the scene's singleton
parameter node bound to the widgets (Slicer's ``parameterNodeWrapper``) and lets go of it when
the scene closes or the module is left. A subclass says which node it is
(``initializeParameterNode``) and refreshes what the binding does not cover (``_update``).
"""

from __future__ import annotations

from typing import Any

import slicer
import vtk
from slicer.util import VTKObservationMixin


class ParameterNodePanel(VTKObservationMixin):
    """The parameter-node plumbing of a module panel; no algorithm."""

    def __init__(self) -> None:
        VTKObservationMixin.__init__(self)
        self.logic: Any = None  # None until setup: on an older Slicer it stays None
        self._parameterNode: Any = None
        self._parameterNodeGuiTag: Any = None

    def loadPanel(self, uiPath: str) -> None:
        """Load the .ui into the module's layout and follow the scene's close events."""
        uiWidget = slicer.util.loadUI(uiPath)
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    @staticmethod
    def singletonParameterNode(moduleName: str) -> tuple[Any, bool]:
        """The scene's parameter node of a module (added if missing) and whether it is new
        (it holds no parameters yet: read this before a wrapper writes its defaults)."""
        node = slicer.mrmlScene.GetSingletonNode(moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(moduleName)
            node.SetAttribute("ModuleName", moduleName)
            node.SetHideFromEditors(True)
            node = slicer.mrmlScene.AddNode(node)
        return node, not node.GetParameterNames()

    def initializeParameterNode(self) -> None:
        raise NotImplementedError

    def _update(self, caller: Any = None, event: Any = None) -> None:
        """Refresh what ``connectGui`` does not bind (choices known at run time, buttons)."""

    def setParameterNode(self, parameterNode: Any) -> None:
        """Bind ``parameterNode`` (a wrapper) to the .ui and observe it; None unbinds."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update)
            self._update()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller: Any, event: Any) -> None:
        self.setParameterNode(None)
        self.sceneClosing()

    def onSceneEndClose(self, caller: Any, event: Any) -> None:
        self.sceneClosed()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def sceneClosing(self) -> None:
        """Forget what belongs to the closing scene (a subclass's results, charts)."""

    def sceneClosed(self) -> None:
        """Reset what a new scene starts without."""

    def cleanup(self) -> None:
        self.removeObservers()
