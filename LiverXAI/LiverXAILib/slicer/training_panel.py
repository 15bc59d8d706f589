"""The Training panel: binds LiverXAITraining.ui to its parameter node and follows the runs.

Mixed into the module's Widget (``LiverXAITraining.py``), so ``self`` is the Widget. The
trainer runs as a child process (``python -m LiverXAILib train``): ``training_logic`` starts
it, reads its events and stops it, ``training_plots`` draws the curves; a timer polls them.
"""

import os
from pathlib import Path

import qt
import slicer

from ..training.options import available_architectures
from . import dependency_flow
from .parameter_node_panel import ParameterNodePanel
from .training_logic import LiverXAITrainingLogic, slicer_python
from .training_parameters import LiverXAITrainingParameterNode, trainingOptionsFrom

POLL_INTERVAL_MS = 500
EVALUATION_FOLDER = "evaluation"


class TrainingPanel(ParameterNodePanel):
    """What the Training module's panel does, button by button."""

    def __init__(self) -> None:
        ParameterNodePanel.__init__(self)
        self._chartShown = False
        self._timer = None

    def setupPanel(self) -> None:
        """Load the .ui, make the Logic, connect the buttons (the Widget's ``setup``)."""
        self.loadPanel(self.resourcePath("UI/LiverXAITraining.ui"))
        self.logic = LiverXAITrainingLogic(python=slicer_python())
        self.ui.architectureSelector.addItems(available_architectures())
        self.ui.metricsTextEdit.setFont(qt.QFontDatabase.systemFont(qt.QFontDatabase.FixedFont))

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onTimer)

        self.ui.architectureSelector.currentTextChanged.connect(self.onArchitectureSelected)
        self.ui.dataFolderButton.clicked.connect(self.onChooseDataFolder)
        self.ui.dataCsvButton.clicked.connect(self.onChooseDataCsv)
        self.ui.outputFolderButton.clicked.connect(self.onChooseOutputFolder)
        self.ui.cacheFolderButton.clicked.connect(self.onChooseCacheFolder)
        self.ui.trainButton.clicked.connect(self.onTrainButton)
        self.ui.stopButton.clicked.connect(self.onStopButton)
        self.ui.evaluateButton.clicked.connect(self.onEvaluateButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic is not None:  # None on an older Slicer: setup showed the message only
            self._timer.stop()
            self.logic.cleanup()
        ParameterNodePanel.cleanup(self)

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        # The timer keeps running: a training run goes on while another module is shown.
        ParameterNodePanel.exit(self)

    def sceneClosed(self) -> None:
        self._chartShown = False

    def initializeParameterNode(self) -> None:
        node, _fresh = self.singletonParameterNode("LiverXAITraining")
        self.setParameterNode(LiverXAITrainingParameterNode(node))

    def _update(self, caller=None, event=None) -> None:
        """Refresh what connectGui does not bind: architecture choice and the buttons' state."""
        params = self._parameterNode
        if params is None:
            return
        combo = self.ui.architectureSelector
        if combo.findText(params.architecture) < 0:  # e.g. saved in a scene, torch not loaded
            combo.addItem(params.architecture)
        if combo.currentText != params.architecture:
            combo.blockSignals(True)
            combo.setCurrentIndex(combo.findText(params.architecture))
            combo.blockSignals(False)
        self.ui.registerNameLineEdit.enabled = params.register
        busy = self.logic.busy
        haveData = bool(params.dataPath.strip())
        self.ui.trainButton.enabled = not busy and haveData and bool(params.outputFolder.strip())
        run = self.logic.currentRun
        self.ui.stopButton.enabled = busy and run is not None and not run.stop_requested
        best = self.logic.bestCheckpoint(params.outputFolder.strip())
        self.ui.evaluateButton.enabled = not busy and haveData and best is not None

    def _startFolder(self, path: str) -> str:
        return path.strip() or os.path.expanduser("~")

    def onChooseDataFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), "Training data folder", self._startFolder(self._dataPath())
        )
        if folder and self._parameterNode:
            self._parameterNode.dataPath = folder

    def onChooseDataCsv(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            "Training data CSV",
            self._startFolder(self._dataPath()),
            "CSV files (*.csv);;All files (*)",
        )
        if path and self._parameterNode:
            self._parameterNode.dataPath = path

    def onChooseOutputFolder(self) -> None:
        if self._parameterNode:
            folder = qt.QFileDialog.getExistingDirectory(
                slicer.util.mainWindow(),
                "Output folder",
                self._startFolder(self._parameterNode.outputFolder),
            )
            if folder:
                self._parameterNode.outputFolder = folder

    def onChooseCacheFolder(self) -> None:
        if self._parameterNode:
            folder = qt.QFileDialog.getExistingDirectory(
                slicer.util.mainWindow(),
                "Cache folder",
                self._startFolder(self._parameterNode.cacheFolder),
            )
            if folder:
                self._parameterNode.cacheFolder = folder

    def _dataPath(self) -> str:
        return self._parameterNode.dataPath if self._parameterNode else ""

    def onArchitectureSelected(self, name: str) -> None:
        if self._parameterNode and name:
            self._parameterNode.architecture = name

    def onTrainButton(self) -> None:
        if not dependency_flow.ensure_in_slicer().ready:  # torch, MONAI ...: asks to install
            return
        with slicer.util.tryWithErrorDisplay("Could not start training.", waitCursor=True):
            self._chartShown = False
            self.ui.metricsTextEdit.setPlainText("")
            self.logic.startTraining(trainingOptionsFrom(self._parameterNode))
            self._showProgress()
            self._timer.start()
        self._update()

    def onStopButton(self) -> None:
        if self.logic.trainingRunning:
            self.logic.stopTraining()
            self.ui.statusLabel.text = "Stopping after the current step…"
        elif self.logic.evaluationRunning:
            self.logic.stopEvaluation()
            self.ui.statusLabel.text = "Stopping the evaluation…"
        self._update()

    def onEvaluateButton(self) -> None:
        if not dependency_flow.ensure_in_slicer().ready:
            return
        params = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start the evaluation.", waitCursor=True):
            out = Path(params.outputFolder.strip())
            split = out / "split.json"
            self.ui.metricsTextEdit.setPlainText("")
            self.logic.startEvaluation(
                models=[self.logic.bestCheckpoint(out)],
                data=params.dataPath.strip(),
                out=out / EVALUATION_FOLDER,
                split=split if split.is_file() else None,
                part=params.evaluationPart,
                device=params.device,
            )
            self._showProgress()
            self._timer.start()
        self._update()

    def onTimer(self) -> None:
        """Show the events that arrived; when the run has ended, report how."""
        errors = []
        try:
            events = self.logic.poll()
        except Exception as error:  # never let a timer raise over and over
            self._timer.stop()
            self._update()
            slicer.util.errorDisplay(f"Lost track of the running process: {error}")
            return
        for event in events:
            try:
                message = self._onEvent(event)
            except Exception as error:
                message = f"Could not show the {event['event']!r} event: {error}"
            if message:
                errors.append(message)
        if events:
            self._showProgress()
        if not self.logic.busy:
            self._timer.stop()
            self._update()
        for message in errors:  # modal: shown after the timer is settled
            slicer.util.errorDisplay(message)

    def _showProgress(self) -> None:
        run = self.logic.currentRun
        if run is None:
            return
        self.ui.progressBar.value = int(round(100 * run.progress.fraction))
        self.ui.statusLabel.text = run.progress.message

    def _onEvent(self, event: dict) -> str | None:
        """Act on one event; returns an error message to show, if any."""
        kind, source = event["event"], event.get("source")
        if kind == "epoch" and not self._chartShown:
            slicer.modules.plots.logic().ShowChartInLayout(self.logic.plots.chartNode)
            self._chartShown = True
        elif kind == "done" and source == "evaluate":
            metrics = event.get("metrics_md")
            folder = Path(metrics).parent if metrics else self.logic.evaluationOutput
            self.ui.metricsTextEdit.setPlainText(self.logic.readMetricsTable(folder))
        elif kind == "exit":
            run = self.logic.training if source == "train" else self.logic.evaluation
            message = run.error_message if run is not None else None
            if message:
                what = "Training" if source == "train" else "Evaluation"
                return f"{what} failed.\n\n{message}"
        return None
