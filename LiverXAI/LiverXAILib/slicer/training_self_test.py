"""The Training module's self-test: a tiny real training through the logic.

Two cases, two epochs, Stop, Resume, Evaluate. The label is the default model's own
segmentation of the bundled sample CT (a pseudo-label), copied as a second patient so the split
has two. Mixed into ``LiverXAITrainingTest``; run it in Slicer with *Reload and Test*.
"""

import shutil
import tempfile
from pathlib import Path

import slicer

from ..training.options import TrainingOptions
from .training_logic import LiverXAITrainingLogic, slicer_python
from .training_panel import EVALUATION_FOLDER


class TrainingSelfTests:
    """The checks; ``self`` is the module's test case (``assert*``, ``setUp``)."""

    TIMEOUT_SECONDS = 900

    def _makeData(self, folder: Path) -> None:
        from .logic import LiverXAILogic

        ct = Path(__file__).resolve().parents[2] / "Resources" / "Data"
        ct = ct / "TotalSegmentatorExampleCT.nii.gz"
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
