"""LiverXAI: segment liver and liver tumour in CT and explain the result with Grad-CAM.

Thin Slicer module file: the Module description, a Widget that binds the .ui to a parameter
node, and a self-test. All work is done by ``LiverXAILib`` (importable headless too).
"""

import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Slicer puts this directory on sys.path; the test runner and other launchers may not.
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)

from LiverXAILib.slicer import slicer_version  # noqa: E402  (imports on any Python: checked first)

if slicer_version.supported():  # the rest of LiverXAILib needs Slicer 5.10 (Python 3.10+)
    from LiverXAILib.errors import Cancelled, NotHounsfieldError
    from LiverXAILib.options import SegmentAndExplainOptions
    from LiverXAILib.slicer import dependency_flow
    from LiverXAILib.slicer.logic import LiverXAILogic  # noqa: F401
    from LiverXAILib.slicer.remembered_settings import load_settings, save_settings

SAMPLE_CT = os.path.join(MODULE_DIR, "Resources", "Data", "TotalSegmentatorExampleCT.nii.gz")
SAMPLE_CT_SHA256 = "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1"


class LiverXAI(ScriptedLoadableModule):
    """Module description shown in Slicer's Modules menu and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LiverXAI: Segment & Explain"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LiverXAI developers"]
        self.parent.helpText = """
Segments the liver and liver tumours in an abdominal CT with a 2D network run slice by slice,
and explains the result with Grad-CAM. <b>Segment &amp; Explain</b> adds to the scene: a labelmap
(0 background, 1 liver, 2 tumour), one Grad-CAM heatmap volume per explained class (values in
[0, 1], overlaid on the CT), a segmentation with liver and tumour segments shown in 3D, and a
report (liver and tumour volume in mL, tumour count, slices whose explanation disagrees with the
prediction). The input volume is never modified.
<br><b>Research software, not for clinical use.</b>
"""
        self.parent.acknowledgementText = """
Methods: U-Net (Ronneberger et al. 2015); Grad-CAM (Selvaraju et al. 2017); the VU-Net,
residual U-Net, MultiResUNet (Ibtehaz &amp; Rahman 2020), DCUNet (Lou et al. 2021) and TransUNet
(Chen et al. 2021) family compared by the source papers.
Data: LiTS, Bilic et al. 2023, "The Liver Tumor Segmentation Benchmark (LiTS)";
3D-IRCADb-01 (IRCAD, CC BY-NC-ND), used for development only and not redistributed;
the TotalSegmentator example CT (Wasserthal et al. 2023, Apache-2.0), bundled as sample data.
"""
        if slicer_version.announce(self.parent):  # an older Slicer: one message, nothing else
            slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Add the bundled CT to the Sample Data module (a file URL, checked by SHA-256)."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="LiverXAI",
        sampleName="TotalSegmentatorExampleCT",
        thumbnailFileName=os.path.join(MODULE_DIR, "Resources", "Icons", "LiverXAI.png"),
        uris=Path(SAMPLE_CT).as_uri(),
        fileNames="TotalSegmentatorExampleCT.nii.gz",
        checksums=f"SHA256:{SAMPLE_CT_SHA256}",
        nodeNames="TotalSegmentatorExampleCT",
    )


@parameterNodeWrapper
class LiverXAIParameterNode:
    """GUI state. ``model`` and ``camLayer`` are bound by hand: their choices come from the
    model catalog and the chosen model's layers."""

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = "unet25d-six"
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    explainLiver: bool = True
    explainTumor: bool = True
    batchSize: Annotated[int, WithinRange(1, 256)] = 16
    allowNonHU: bool = False
    methodGradCam: bool = True
    methodGradCamPlusPlus: bool = False
    methodIntegratedGradients: bool = False
    uncertainty: Annotated[str, Choice(["tta", "mc-dropout", "none"])] = "tta"
    camLayer: str = ""  # "" = the model's default layer
    integratedGradientsSteps: Annotated[int, WithinRange(2, 256)] = 32
    integratedGradientsBaseline: Annotated[str, Choice(["air", "water", "blurred"])] = "air"
    volumeRendering: bool = True
    ctVolumeRendering: bool = False
    exportNifti: bool = True
    exportNrrd: bool = False
    exportStl: bool = False
    exportObj: bool = False
    exportDicomSeg: bool = False
    exportFolder: str = ""


class LiverXAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node and calls the logic; holds no algorithm."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelEvent: threading.Event | None = None
        self._lastResult = None
        self._lastInput = None
        self._runInput = None
        self._layers: list[str] = []
        self._catalog: dict[str, dict] = {}
        self._dependenciesChecked = False
        self._describedDevice = None
        self._existingResults = "keep"

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if slicer_version.show_in_panel(self.layout):  # an older Slicer: the message only
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LiverXAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LiverXAILogic()
        self.refreshModelList()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelSelector.currentIndexChanged.connect(self.onModelSelected)
        self.ui.camLayerSelector.currentIndexChanged.connect(self.onLayerSelected)
        self.ui.reviewTable.cellClicked.connect(self.onReviewRowClicked)
        self.ui.openReportButton.clicked.connect(self.onOpenReportButton)
        self.ui.downloadModelButton.clicked.connect(self.onDownloadModelButton)
        self.ui.importModelButton.clicked.connect(self.onImportModelButton)
        self.ui.exportFolderButton.clicked.connect(self.onExportFolderButton)
        self.ui.exportButton.clicked.connect(self.onExportButton)
        self.ui.volumeRenderingCheckBox.toggled.connect(self.onVolumeRenderingToggled)
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.cancelButton.clicked.connect(self.onCancelButton)
        self.initializeParameterNode()
        self.refreshLayerList()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is None:  # an older Slicer: setup showed the message only
            return
        self.refreshModelList()  # the Training module may have registered a model meanwhile
        self.initializeParameterNode()
        self.refreshLayerList()

    def refreshModelList(self) -> None:
        """Re-read the model catalog (bundled and registered models), keeping the choice."""
        combo = self.ui.modelSelector
        current = combo.currentData
        combo.blockSignals(True)
        combo.clear()
        try:
            entries = self.logic.modelCatalog()
        except Exception as error:  # a damaged user catalog: say so, keep the bundled models
            slicer.util.errorDisplay(f"The model catalog could not be read: {error}")
            entries = []
        problem = self.logic.modelCatalogProblem()
        if problem and problem != getattr(self, "_shownCatalogProblem", None):
            # the bundled models stay usable; say once what is wrong with the user's catalog
            self._shownCatalogProblem = problem
            slicer.util.warningDisplay(problem, windowTitle="LiverXAI model catalog")
        self._catalog = {entry["name"]: entry for entry in entries}
        for entry in entries:
            waiting = entry["source"] == "download" and not entry["available"]
            combo.addItem(entry["name"] + (" (not downloaded)" if waiting else ""), entry["name"])
        if current and combo.findData(current) >= 0:
            combo.setCurrentIndex(combo.findData(current))
        combo.blockSignals(False)

    def refreshLayerList(self) -> None:
        """Layers of the chosen model for Grad-CAM: its default first, then every convolution."""
        if self._parameterNode is None:
            return
        combo = self.ui.camLayerSelector
        combo.blockSignals(True)
        combo.clear()
        try:
            layers = self.logic.layerChoices(self._parameterNode.model)
        except Exception:  # no torch yet, or a model that does not load: default only
            layers = []
        combo.addItems([f"{layers[0]} (model default)"] + layers[1:] if layers else ["default"])
        wanted = self._parameterNode.camLayer
        index = layers.index(wanted) if wanted in layers[1:] else 0
        combo.setCurrentIndex(index)
        combo.blockSignals(False)
        self._layers = layers

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._forgetResult()  # its nodes go with the scene

    def _forgetResult(self) -> None:
        self._lastResult = None
        self._lastInput = None
        self.ui.resultsLabel.text = ""
        self.ui.reviewTable.setRowCount(0)
        self.ui.openReportButton.enabled = False
        self.ui.exportButton.enabled = False

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        node = slicer.mrmlScene.GetSingletonNode("LiverXAI", "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag("LiverXAI")
            node.SetAttribute("ModuleName", "LiverXAI")
            node.SetHideFromEditors(True)
            node = slicer.mrmlScene.AddNode(node)
        fresh = not node.GetParameterNames()  # read before the wrapper writes its defaults
        self.setParameterNode(LiverXAIParameterNode(node))
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first
        if fresh:  # a new scene: start from the choices remembered in Slicer's settings
            remembered = load_settings(qt.QSettings())
            params = self._parameterNode
            params.device = remembered["device"]
            params.batchSize = remembered["batchSize"]
            params.explainLiver = "liver" in remembered["explainClasses"]
            params.explainTumor = "tumor" in remembered["explainClasses"]

    def setParameterNode(self, parameterNode: "LiverXAIParameterNode | None") -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update)
            self._update()

    def _update(self, caller=None, event=None) -> None:
        """Refresh what connectGui does not bind: model choice, device text, Apply state."""
        params = self._parameterNode
        if params is None:  # the scene was closed (possibly during a run)
            return
        combo = self.ui.modelSelector
        if combo.findData(params.model) < 0:  # e.g. a checkpoint named in a saved scene
            combo.addItem(params.model, params.model)
        if combo.currentData != params.model:
            combo.blockSignals(True)
            combo.setCurrentIndex(combo.findData(params.model))
            combo.blockSignals(False)
        if self._describedDevice != params.device:  # describing imports torch: only on change
            self._describedDevice = params.device
            self.ui.deviceInfoLabel.text = self.logic.describeDevice(params.device)
        running = self._cancelEvent is not None  # a run or a download: one at a time
        entry = self._catalog.get(params.model, {})
        downloadable = entry.get("source") == "download" and not entry.get("available")
        self.ui.applyButton.enabled = bool(params.inputVolume) and not running
        self.ui.downloadModelButton.enabled = downloadable and not running
        self.ui.importModelButton.enabled = not running
        self.ui.exportButton.enabled = (
            self._lastResult is not None and bool(params.exportFolder) and not running
        )

    def onModelSelected(self, index: int) -> None:
        name = self.ui.modelSelector.itemData(index) if index >= 0 else None
        if self._parameterNode and name:
            self._parameterNode.model = name
            self._parameterNode.camLayer = ""
            self.refreshLayerList()

    def onLayerSelected(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            layers = self._layers
            self._parameterNode.camLayer = layers[index] if 0 < index < len(layers) else ""

    def onReviewRowClicked(self, row: int, _column: int) -> None:
        """Show the clicked review slice in every slice view."""
        if self._lastResult is None or row >= len(self._lastResult.reviewItems):
            return
        item = self._lastResult.reviewItems[row]
        with slicer.util.tryWithErrorDisplay("Could not show that slice."):
            self.logic.jumpToSlice(self._lastInput, item["canonicalSlice"])

    def onOpenReportButton(self) -> None:
        """Write the HTML report into a temporary folder and open it in the browser."""
        import tempfile

        with slicer.util.tryWithErrorDisplay("Writing the report failed.", waitCursor=True):
            folder = tempfile.mkdtemp(prefix="LiverXAI-report-")
            path = self.logic.writeReport(self._lastResult, self._lastInput, folder)
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))

    def onDownloadModelButton(self) -> None:
        """Download the selected catalog model (verified by SHA-256, then cached)."""
        name = self._parameterNode.model
        with slicer.util.tryWithErrorDisplay(f"Downloading {name} failed.", waitCursor=True):
            self._cancelEvent = threading.Event()
            self.ui.cancelButton.enabled = True
            self._update()
            try:
                self.logic.downloadModel(name, self.onProgress, self._cancelEvent)
            finally:
                self._cancelEvent = None
                self.ui.cancelButton.enabled = False
                self.ui.progressBar.setFormat("%p%")
            self.refreshModelList()
            self.refreshLayerList()
            self._update()

    def onImportModelButton(self) -> None:
        """Add a model file given to the user (offline sites): verified, then catalogued."""
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Import model", "", "PyTorch checkpoints (*.pt *.pth)"
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Importing the model failed.", waitCursor=True):
            entry = self.logic.importModel(path)
            self.refreshModelList()
            self._parameterNode.camLayer = ""  # the new model's default layer
            self._parameterNode.model = entry["name"]
            self.refreshLayerList()
            slicer.util.infoDisplay(f"Model {entry['name']} added (SHA-256 {entry['sha256']}).")

    def onExportFolderButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), "Export folder", self._parameterNode.exportFolder
        )
        if folder:
            self._parameterNode.exportFolder = folder

    def onExportButton(self) -> None:
        """Write the last result in the checked formats into the export folder."""
        params = self._parameterNode
        formats = SegmentAndExplainOptions.fromParameterNode(params).exports
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            written = self.logic.exportResults(
                self._lastResult, self._lastInput, params.exportFolder, formats
            )
            count = sum(len(paths) for paths in written.values())
            slicer.util.infoDisplay(f"{count} files written to {params.exportFolder}.")

    def onVolumeRenderingToggled(self, enabled: bool) -> None:
        """The one 3D switch: volume rendering or surfaces, for the last result too."""
        if self._lastResult is not None:
            with slicer.util.tryWithErrorDisplay("Could not change the 3D display."):
                self.logic.setVolumeRendering(self._lastResult, enabled)

    def _ensureDependencies(self) -> bool:
        """On first use: the packages LiverXAI needs, installed after asking (dependency_flow)."""
        if not self._dependenciesChecked:
            outcome = dependency_flow.ensure_in_slicer()
            self._dependenciesChecked = outcome.ready
            if outcome.installed:
                self._describedDevice = None  # describe the device again, now with torch
        return self._dependenciesChecked

    def _previousResultsChoice(self) -> "str | None":
        """ "keep" or "replace" earlier results for this input (asked), None to stop."""
        runs = self.logic.previousResults(self._parameterNode.inputVolume)
        if not runs:
            return "keep"
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle("LiverXAI: earlier results")
        box.setText(
            f"{self._parameterNode.inputVolume.GetName()} already has LiverXAI results "
            f"({'; '.join(runs)}). Replace them, or keep both?"
        )
        replace = box.addButton("Replace", qt.QMessageBox.AcceptRole)
        keep = box.addButton("Keep both", qt.QMessageBox.AcceptRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.exec_()
        clicked = box.clickedButton()
        return "replace" if clicked == replace else "keep" if clicked == keep else None

    def onCancelButton(self) -> None:
        if self._cancelEvent is not None:
            self._cancelEvent.set()
            self.ui.cancelButton.enabled = False

    def onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.progressBar.setFormat(f"{message} (%p%)")
        slicer.app.processEvents()  # lets the Cancel button be clicked

    def onApplyButton(self) -> None:
        if not self._ensureDependencies():
            return
        existing = self._previousResultsChoice()
        if existing is None:
            return
        with slicer.util.tryWithErrorDisplay("Segment & Explain failed.", waitCursor=True):
            self._existingResults = existing
            self._cancelEvent = threading.Event()
            self.ui.cancelButton.enabled = True
            self.ui.resultsLabel.text = ""
            self.ui.reviewTable.setRowCount(0)
            self.ui.openReportButton.enabled = False
            self._update()
            try:
                result = self._runAskingAboutHU()
            except Cancelled:
                self.ui.progressBar.value = 0
                self.ui.resultsLabel.text = "Cancelled — nothing was added to the scene."
                return
            finally:
                self._cancelEvent = None
                self.ui.cancelButton.enabled = False
                self.ui.progressBar.setFormat("%p%")
                self._update()
            if result is not None:
                self._showResult(result)

    def _runAskingAboutHU(self):
        """Run once; if the input is not in HU, ask, then run again with allowNonHU."""
        try:
            return self._run(self._parameterNode.allowNonHU)
        except NotHounsfieldError as error:
            if not slicer.util.confirmYesNoDisplay(f"{error}\n\nRun Segment & Explain anyway?"):
                return None
            return self._run(allowNonHU=True)

    def _run(self, allowNonHU: bool):
        params = self._parameterNode
        options = SegmentAndExplainOptions.fromParameterNode(
            params,
            allowNonHU=allowNonHU,
            showResults=False,  # _showResult sets the slice views (and fits them)
            existingResults=self._existingResults,
        )
        self._runInput = params.inputVolume
        checked = [name for name in ("liver", "tumor") if getattr(params, f"explain{name.title()}")]
        save_settings(qt.QSettings(), params.device, params.batchSize, checked)
        return self.logic.segmentAndExplain(
            params.inputVolume, options, self.onProgress, self._cancelEvent
        )

    def _showResult(self, result) -> None:
        self._lastResult = result
        self._lastInput = self._runInput  # the CT this result was made from
        self.ui.resultsLabel.text = result.summary()
        table = self.ui.reviewTable
        table.setRowCount(len(result.reviewItems))
        for row, item in enumerate(result.reviewItems):
            first, last = (
                item.get("firstSlice", item["slice"]),
                item.get("lastSlice", item["slice"]),
            )
            where = (
                str(item["slice"]) if first == last else f"{min(first, last)}–{max(first, last)}"
            )
            cells = (where, item["class"], item["method"], item["reason"])
            for column, text in enumerate(cells):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        table.resizeColumnsToContents()
        self.ui.openReportButton.enabled = True
        heatmapIDs = list(result.heatmapNodeIDs.values())
        slicer.util.setSliceViewerLayers(
            background=self._parameterNode.inputVolume,
            foreground=slicer.mrmlScene.GetNodeByID(heatmapIDs[0]) if heatmapIDs else None,
            foregroundOpacity=0.4,
            label=slicer.mrmlScene.GetNodeByID(result.labelmapNodeID),
            fit=True,
        )
        self.logic.centre3DViews(result)
        self._update()


class LiverXAITest(ScriptedLoadableModuleTest):
    """Runs the real pipeline on the bundled sample CT."""

    def setUp(self):
        slicer_version.skip_test_if_unsupported()  # an older Slicer: skipped, saying why
        dependency_flow.require_for_self_test()  # packages installed after asking, or skipped
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentAndExplainOnSample()
        self.setUp()
        self.test_CancelLeavesSceneUnchanged()
        self.setUp()
        self.test_RerunReplacesAndVolumeRenderingSwitches()

    def test_SegmentAndExplainOnSample(self):
        import numpy as np

        inputNode = slicer.util.loadVolume(SAMPLE_CT)
        before = slicer.util.arrayFromVolume(inputNode).copy()
        result = LiverXAILogic().segmentAndExplain(inputNode)

        labelmap = slicer.mrmlScene.GetNodeByID(result.labelmapNodeID)
        self.assertIsNotNone(labelmap)
        self._assertSameGeometry(inputNode, labelmap)
        labels = slicer.util.arrayFromVolume(labelmap)
        self.assertTrue(set(np.unique(labels).tolist()) <= {0, 1, 2})
        self.assertTrue((labels == 1).any(), "no liver found in the sample CT")

        mapIDs = [*result.heatmapNodeIDs.values(), result.uncertaintyNodeID]
        self.assertEqual(len(mapIDs), 3)
        for nodeID in mapIDs:  # heatmaps and uncertainty: network-size grid over the CT's box
            mapNode = slicer.mrmlScene.GetNodeByID(nodeID)
            self.assertIsNotNone(mapNode, nodeID)
            self._assertSameBox(inputNode, mapNode)
            values = slicer.util.arrayFromVolume(mapNode)
            self.assertGreaterEqual(float(values.min()), 0.0)
            self.assertLessEqual(float(values.max()), 1.0)
        for item in result.reviewItems[:3]:
            LiverXAILogic().jumpToSlice(inputNode, item["canonicalSlice"])
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            report = LiverXAILogic().writeReport(result, inputNode, folder)
            self.assertIn("data:image/png;base64,", report.read_text())

        segmentation = slicer.mrmlScene.GetNodeByID(result.segmentationNodeID).GetSegmentation()
        for name in ("liver", "tumor"):
            self.assertTrue(segmentation.GetSegmentIdBySegmentName(name), name)
        converter = slicer.vtkSegmentationConverter
        surface = converter.GetSegmentationClosedSurfaceRepresentationName()
        self.assertTrue(segmentation.ContainsRepresentation(surface))

        np.testing.assert_array_equal(before, slicer.util.arrayFromVolume(inputNode))
        self.assertGreater(result.liverVolumeMl, 0)

    def test_CancelLeavesSceneUnchanged(self):
        inputNode = slicer.util.loadVolume(SAMPLE_CT)
        nodeCount = slicer.mrmlScene.GetNumberOfNodes()
        cancelEvent = threading.Event()
        cancelEvent.set()
        with self.assertRaises(Cancelled):
            LiverXAILogic().segmentAndExplain(inputNode, cancelEvent=cancelEvent)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodeCount)

    def test_RerunReplacesAndVolumeRenderingSwitches(self):
        """3D in the real application: volume rendering, surfaces, terminology, re-runs."""
        logic = LiverXAILogic()
        inputNode = slicer.util.loadVolume(SAMPLE_CT)
        first = logic.segmentAndExplain(inputNode, uncertainty="none")
        rendering = slicer.mrmlScene.GetNodeByID(first.volumeRenderingNodeID)
        self.assertTrue(rendering.GetVisibility())
        segmentation = slicer.mrmlScene.GetNodeByID(first.segmentationNodeID)
        logic.setVolumeRendering(first, False)
        self.assertFalse(rendering.GetVisibility())
        self.assertTrue(segmentation.GetDisplayNode().GetVisibility3D())
        segment = segmentation.GetSegmentation().GetSegment(
            segmentation.GetSegmentation().GetSegmentIdBySegmentName("liver")
        )
        self.assertIn("SCT^10200004^Liver", segment.GetTerminology())
        self.assertGreaterEqual(logic.centre3DViews(first), 1)  # the application's 3D view
        second = logic.segmentAndExplain(inputNode, uncertainty="none", existingResults="replace")
        self.assertIsNone(slicer.mrmlScene.GetNodeByID(first.labelmapNodeID))
        self.assertEqual(logic.previousResults(inputNode), [second.run])

    def _assertSameBox(self, reference, node) -> None:
        import numpy as np

        def corners(volume):
            matrix = vtk.vtkMatrix4x4()
            volume.GetIJKToRASMatrix(matrix)
            matrix = slicer.util.arrayFromVTKMatrix(matrix)
            size = volume.GetImageData().GetDimensions()
            points = [
                (i, j, k)
                for i in (-0.5, size[0] - 0.5)
                for j in (-0.5, size[1] - 0.5)
                for k in (-0.5, size[2] - 0.5)
            ]
            return sorted(tuple(np.round(matrix @ [*p, 1.0], 4)[:3]) for p in points)

        np.testing.assert_allclose(corners(node), corners(reference), atol=1e-3)

    def _assertSameGeometry(self, reference, node) -> None:
        import numpy as np

        expected, actual = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        reference.GetIJKToRASMatrix(expected)
        node.GetIJKToRASMatrix(actual)
        np.testing.assert_allclose(
            slicer.util.arrayFromVTKMatrix(actual),
            slicer.util.arrayFromVTKMatrix(expected),
            atol=1e-6,
        )
        dimensions = node.GetImageData().GetDimensions()
        self.assertEqual(dimensions, reference.GetImageData().GetDimensions())
