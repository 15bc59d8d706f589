"""LiverXAI Training: train and evaluate the segmentation networks from Slicer.

Thin Slicer module file: the module's description, a Widget and a self-test entry. The panel's
work is ``LiverXAILib/slicer/training_panel.py`` (the trainer runs as a child process that
``training_logic`` starts and follows), the checks of the self-test are
``LiverXAILib/slicer/training_self_test.py``.
"""

import os
import sys

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

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
    from LiverXAILib.slicer.training_logic import LiverXAITrainingLogic  # noqa: F401
    from LiverXAILib.slicer.training_panel import TrainingPanel
    from LiverXAILib.slicer.training_self_test import TrainingSelfTests
else:  # an older Slicer: the Widget shows a message and the self-test skips
    TrainingPanel = TrainingSelfTests = slicer_version.UnsupportedPanel


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


class LiverXAITrainingWidget(TrainingPanel, ScriptedLoadableModuleWidget):
    """The module's panel; ``TrainingPanel`` binds the .ui and follows the runs."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        TrainingPanel.__init__(self)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if slicer_version.show_in_panel(self.layout):  # an older Slicer: the message only
            return
        self.setupPanel()


class LiverXAITrainingTest(ScriptedLoadableModuleTest, TrainingSelfTests):
    """A tiny real training through the logic (the checks: ``TrainingSelfTests``)."""

    def setUp(self):
        slicer_version.skip_test_if_unsupported()  # an older Slicer: skipped, saying why
        dependency_flow.require_for_self_test()  # packages installed after asking, or skipped
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_TrainStopResumeEvaluate()
