"""The Segment & Explain panel's state: Slicer's parameter node, bound to the .ui.

Each field is bound to the widget named by its ``SlicerParameterName`` in ``LiverXAI.ui``;
``SegmentAndExplainOptions.fromParameterNode`` reads it into the run's options.
"""

from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from ..constants import DEFAULT_MODEL


@parameterNodeWrapper
class LiverXAIParameterNode:
    """GUI state. ``model`` and ``camLayer`` are bound by hand: their choices come from the
    model catalog and the chosen model's layers."""

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = DEFAULT_MODEL
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
