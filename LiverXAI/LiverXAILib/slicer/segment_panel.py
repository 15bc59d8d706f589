"""The Segment & Explain panel: binds LiverXAI.ui to its parameter node and calls the Logic.

Mixed into the module's Widget (``LiverXAI.py``), so ``self`` is the Widget: ``self.layout``,
``self.parent`` and ``self.resourcePath`` are Slicer's. It holds no algorithm: a run is
``LiverXAILogic.segmentAndExplain`` with the options read from the parameter node.
"""

import threading

import qt
import slicer

from ..errors import Cancelled, NotHounsfieldError
from ..options import SegmentAndExplainOptions
from . import dependency_flow
from .logic import LiverXAILogic
from .parameter_node_panel import ParameterNodePanel
from .remembered_settings import load_settings, save_settings
from .segment_parameters import LiverXAIParameterNode


class SegmentExplainPanel(ParameterNodePanel):
    """What the Segment & Explain module's panel does, button by button."""

    def __init__(self) -> None:
        ParameterNodePanel.__init__(self)
        self._cancelEvent: threading.Event | None = None
        self._lastResult = None
        self._lastInput = None
        self._runInput = None
        self._layers: list[str] = []
        self._catalog: dict[str, dict] = {}
        self._dependenciesChecked = False
        self._describedDevice = None
        self._existingResults = "keep"
        self._shownCatalogProblem: str | None = None

    def setupPanel(self) -> None:
        """Load the .ui, make the Logic and connect the buttons (the Widget's ``setup``)."""
        self.loadPanel(self.resourcePath("UI/LiverXAI.ui"))
        self.logic = LiverXAILogic()
        self.refreshModelList()
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
        if problem and problem != self._shownCatalogProblem:
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

    def sceneClosing(self) -> None:
        self._forgetResult()  # its nodes go with the scene

    def _forgetResult(self) -> None:
        self._lastResult = None
        self._lastInput = None
        self.ui.resultsLabel.text = ""
        self.ui.reviewTable.setRowCount(0)
        self.ui.openReportButton.enabled = False
        self.ui.exportButton.enabled = False

    def initializeParameterNode(self) -> None:
        node, fresh = self.singletonParameterNode("LiverXAI")
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
