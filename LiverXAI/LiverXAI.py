"""LiverXAI: segment liver and liver tumour in CT and explain the result with Grad-CAM.

Thin Slicer module file: the module's description, a Widget and a self-test entry. The panel's
work is ``LiverXAILib/slicer/segment_panel.py``, the checks of the self-test are
``LiverXAILib/slicer/segment_self_test.py``, and everything else is ``LiverXAILib``
(importable headless too).
"""

import os
import sys
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

# Slicer puts this directory on sys.path; the test runner and other launchers may not.
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)

from LiverXAILib.slicer import slicer_version  # noqa: E402  (imports on any Python: checked first)

if slicer_version.supported():  # the rest of LiverXAILib needs Slicer 5.10 (Python 3.10+)
    from LiverXAILib.slicer import dependency_flow
    from LiverXAILib.slicer.logic import LiverXAILogic  # noqa: F401  (the module's Logic)
    from LiverXAILib.slicer.segment_panel import SegmentExplainPanel
    from LiverXAILib.slicer.segment_self_test import SELF_TESTS, SegmentExplainSelfTests
else:  # an older Slicer: the Widget shows a message and the self-test skips
    SegmentExplainPanel = SegmentExplainSelfTests = slicer_version.UnsupportedPanel

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


class LiverXAIWidget(SegmentExplainPanel, ScriptedLoadableModuleWidget):
    """The module's panel; ``SegmentExplainPanel`` binds the .ui and calls the Logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        SegmentExplainPanel.__init__(self)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if slicer_version.show_in_panel(self.layout):  # an older Slicer: the message only
            return
        self.setupPanel()


class LiverXAITest(ScriptedLoadableModuleTest, SegmentExplainSelfTests):
    """Runs the real pipeline on the bundled sample CT (the checks: ``SegmentExplainSelfTests``)."""

    def setUp(self):
        slicer_version.skip_test_if_unsupported()  # an older Slicer: skipped, saying why
        dependency_flow.require_for_self_test()  # packages installed after asking, or skipped
        slicer.mrmlScene.Clear()

    def runTest(self):
        for name in SELF_TESTS:
            self.setUp()
            getattr(self, name)()
