"""LiverXAI Training: train and evaluate the segmentation networks from Slicer.

Thin Slicer module file: the Module description, a Widget that binds the .ui to a parameter
node and polls the logic on a timer, and a self-test. The trainer runs as a child process
(``python -m LiverXAILib train``); ``LiverXAILib.slicer.training_logic`` starts it (through
``training_process``), reads its events and stops it, and
``LiverXAILib.slicer.training_plots`` draws the curves. They run without Qt.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Installed, this file sits beside LiverXAILib (one qt-scripted-modules folder); in the source
# tree LiverXAILib is in ../LiverXAI.
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
for _folder in (MODULE_DIR, os.path.join(os.path.dirname(MODULE_DIR), "LiverXAI")):
    if os.path.isdir(os.path.join(_folder, "LiverXAILib")):
        if _folder not in sys.path:
            sys.path.insert(0, _folder)
        break

from LiverXAILib.slicer import slicer_version  # noqa: E402  (imports on any Python: checked first)

if slicer_version.supported():  # the rest of LiverXAILib needs Slicer 5.10 (Python 3.10+)
    from LiverXAILib.slicer import dependency_flow
    from LiverXAILib.slicer.training_logic import LiverXAITrainingLogic, slicer_python
    from LiverXAILib.training.options import (
        AUGMENTATIONS,
        TrainingOptions,
        available_architectures,
        default_model_name,
    )

POLL_INTERVAL_MS = 500
EVALUATION_FOLDER = "evaluation"


class LiverXAITraining(ScriptedLoadableModule):
    """Module description shown in Slicer's Modules menu and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LiverXAI: Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["LiverXAI"]
        self.parent.contributors = ["LiverXAI developers"]
        self.parent.helpText = """
Trains the liver and tumour segmentation networks used by <b>LiverXAI: Segment &amp; Explain</b>
and evaluates them. Choose the data (a LiTS folder of volume-N / segmentation-N files, an MSD task
folder, or a CSV of image,label[,patient] rows), an output folder, the architecture and the
training settings; the cases are split by patient into training, validation and test.
<b>Train</b> runs the trainer as a separate process, so Slicer stays responsive; the progress bar
and the loss and Dice curves (plot view) follow it epoch by epoch. <b>Stop</b> ends it cleanly after
the current step: last.pt keeps the last finished epoch and <i>Resume</i> continues from it.
The output folder receives best.pt, last.pt, history.csv, curves.png and split.json; the best
checkpoint is added to Segment &amp; Explain's model list under the chosen name.
<b>Evaluate</b> measures best.pt on the held-out cases of the split and shows the metrics table.
<br><b>Research software, not for clinical use.</b>
"""
        slicer_version.announce(self.parent)  # an older Slicer: one message for both modules
        self.parent.acknowledgementText = """
Networks: U-Net (Ronneberger et al. 2015) and the VU-Net, residual U-Net, MultiResUNet
(Ibtehaz &amp; Rahman 2020), DCUNet (Lou et al. 2021) and TransUNet (Chen et al. 2021) family.
Data layout: LiTS, Bilic et al. 2023, "The Liver Tumor Segmentation Benchmark (LiTS)".
"""


@parameterNodeWrapper
class LiverXAITrainingParameterNode:
    """GUI state. ``architecture`` is bound by hand: its choices come from the network registry."""

    dataPath: str = ""
    outputFolder: str = ""
    architecture: str = "unet"
    inputSize: Annotated[int, Choice([128, 256])] = 128
    slices: Annotated[int, Choice([1, 3, 5])] = 1
    epochs: Annotated[int, WithinRange(1, 1000)] = 50
    batchSize: Annotated[int, WithinRange(1, 256)] = 16
    loss: Annotated[str, Choice(["dicece", "ce"])] = "dicece"
    augmentRotate: bool = True
    augmentFlip: bool = False
    augmentZoom: bool = True
    augmentNoise: bool = True
    augmentIntensity: bool = True
    register: bool = True
    registerName: str = ""
    resume: bool = False
    learningRate: Annotated[float, WithinRange(0.000001, 1.0)] = 0.001
    schedule: Annotated[str, Choice(["none", "step", "cosine"])] = "none"
    patience: Annotated[int, WithinRange(1, 1000)] = 15
    keepEmpty: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    cacheFolder: str = ""
    evaluationPart: Annotated[str, Choice(["test", "validation", "train", "all"])] = "test"


def trainingOptionsFrom(params: LiverXAITrainingParameterNode) -> "TrainingOptions":
    """The trainer's options from the GUI state."""
    out = params.outputFolder.strip()
    wanted = {
        "rotate": params.augmentRotate,
        "flip": params.augmentFlip,
        "zoom": params.augmentZoom,
        "noise": params.augmentNoise,
        "intensity": params.augmentIntensity,
    }
    augment = [name for name in AUGMENTATIONS if wanted[name]]  # KeyError: a new one unbound
    registerName = (
        (params.registerName.strip() or default_model_name(out)) if params.register else None
    )
    return TrainingOptions(
        data=params.dataPath.strip(),
        out=out,
        arch=params.architecture,
        epochs=params.epochs,
        size=params.inputSize,
        slices=params.slices,
        loss=params.loss,
        batch_size=params.batchSize,
        lr=params.learningRate,
        schedule=params.schedule,
        patience=params.patience,
        augment=augment,
        keep_empty=params.keepEmpty,
        device=params.device,
        cache=params.cacheFolder.strip() or None,
        register=registerName,
        resume=params.resume,
    )


class LiverXAITrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, starts runs and shows their events; no algorithm."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._chartShown = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if slicer_version.show_in_panel(self.layout):  # an older Slicer: the message only
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LiverXAITraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LiverXAITrainingLogic(python=slicer_python())
        self.ui.architectureSelector.addItems(available_architectures())
        self.ui.metricsTextEdit.setFont(qt.QFontDatabase.systemFont(qt.QFontDatabase.FixedFont))

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
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
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        # The timer keeps running: a training run goes on while another module is shown.
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self._chartShown = False
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        node = slicer.mrmlScene.GetSingletonNode("LiverXAITraining", "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag("LiverXAITraining")
            node.SetAttribute("ModuleName", "LiverXAITraining")
            node.SetHideFromEditors(True)
            node = slicer.mrmlScene.AddNode(node)
        self.setParameterNode(LiverXAITrainingParameterNode(node))

    def setParameterNode(self, parameterNode: "LiverXAITrainingParameterNode | None") -> None:
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

    # Choosing paths -------------------------------------------------------------------------
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

    # Runs -----------------------------------------------------------------------------------------
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

    def _onEvent(self, event: dict) -> "str | None":
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


class LiverXAITrainingTest(ScriptedLoadableModuleTest):
    """A tiny real training through the logic: two cases, two epochs, Stop, Resume, Evaluate.

    The label is the demo model's own segmentation of the bundled sample CT (a pseudo-label),
    copied as a second patient so the split has two.
    """

    TIMEOUT_SECONDS = 900

    def setUp(self):
        slicer_version.skip_test_if_unsupported()  # an older Slicer: skipped, saying why
        dependency_flow.require_for_self_test()  # packages installed after asking, or skipped
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TrainStopResumeEvaluate()

    def _makeData(self, folder: Path) -> None:
        from LiverXAILib.slicer.logic import LiverXAILogic

        sample = Path(MODULE_DIR).parent / "LiverXAI" / "Resources" / "Data"
        if not sample.is_dir():  # installed: both modules share one folder
            sample = Path(MODULE_DIR) / "Resources" / "Data"
        ct = sample / "TotalSegmentatorExampleCT.nii.gz"
        ctNode = slicer.util.loadVolume(str(ct))
        result = LiverXAILogic().segmentAndExplain(ctNode, explainClasses=[])
        label = slicer.mrmlScene.GetNodeByID(result.labelmapNodeID)
        folder.mkdir(parents=True, exist_ok=True)
        self.assertTrue(slicer.util.saveNode(label, str(folder / "segmentation-1.nii.gz")))
        shutil.copy(ct, folder / "volume-1.nii.gz")
        shutil.copy(ct, folder / "volume-2.nii.gz")
        shutil.copy(folder / "segmentation-1.nii.gz", folder / "segmentation-2.nii.gz")

    def test_TrainStopResumeEvaluate(self):
        import numpy as np

        temporary = Path(tempfile.mkdtemp(prefix="LiverXAITrainingTest-"))
        data, out = temporary / "data", temporary / "run"
        self._makeData(data)
        logic = LiverXAITrainingLogic(python=slicer_python())
        options = TrainingOptions(
            data=data, out=out, arch="unet", epochs=2, size=128, cache=temporary / "cache"
        )
        wait = {"timeout": self.TIMEOUT_SECONDS, "idle": slicer.app.processEvents}
        try:
            run = logic.startTraining(options)
            epoch = logic.waitFor(["epoch"], **wait)
            self.assertIsNotNone(epoch, run.error_message)
            self.assertGreaterEqual(logic.plots.rowCount, 1)
            self.assertTrue(np.isfinite(logic.plots.column("loss")[0]))

            logic.stopTraining()
            end = logic.waitFor(["stopped", "done"], **wait)
            self.assertIsNotNone(end, run.error_message)
            logic.waitFor(["exit"], **wait)
            self.assertEqual(run.returncode, 0, run.error_message)
            self.assertTrue((out / "last.pt").is_file())

            options.resume = True
            run = logic.startTraining(options)
            done = logic.waitFor(["done"], **wait)
            self.assertIsNotNone(done, run.error_message)
            logic.waitFor(["exit"], **wait)
            self.assertEqual(run.returncode, 0, run.error_message)
            self.assertTrue((out / "best.pt").is_file())

            evaluation = logic.startEvaluation(
                out / "best.pt", data, out / EVALUATION_FOLDER, out / "split.json", "all"
            )
            done = logic.waitFor(["done"], **wait)
            self.assertIsNotNone(done, evaluation.error_message)
            self.assertIn("|", logic.readMetricsTable(out / EVALUATION_FOLDER))
        finally:
            logic.cleanup()
            shutil.rmtree(temporary, ignore_errors=True)
