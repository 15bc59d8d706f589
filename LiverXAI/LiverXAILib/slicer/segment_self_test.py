"""The Segment & Explain module's self-test: the real pipeline on the bundled sample CT.

Mixed into ``LiverXAITest`` (``LiverXAI.py``), a ``ScriptedLoadableModuleTest``; run it in
Slicer with *Developer Tools → Reload and Test*. CI runs the same Logic headless instead
(``Testing/test_logic_mrml.py``).
"""

import threading
from pathlib import Path

import slicer
import vtk

from ..errors import Cancelled
from .logic import LiverXAILogic

SAMPLE_CT = str(
    Path(__file__).resolve().parents[2] / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
)
SELF_TESTS = (
    "test_SegmentAndExplainOnSample",
    "test_CancelLeavesSceneUnchanged",
    "test_RerunReplacesAndVolumeRenderingSwitches",
)


class SegmentExplainSelfTests:
    """The checks; ``self`` is the module's test case (``assert*``, ``setUp``)."""

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
