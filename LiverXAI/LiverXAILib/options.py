"""The options of one Segment & Explain run, in one typed object.

``SegmentAndExplainOptions`` is what the Slicer module's parameter node, the Logic
(``segmentAndExplain(inputVolumeNode, options)``), the command line, the batch runner and the
benchmark hand around; ``validate`` is the one place that checks them. Field names follow
Slicer's camelCase, so the options read the same in the Python console and in the parameter
node.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .constants import DEFAULT_MODEL, EXPLAINABLE_CLASSES

EXISTING_RESULTS = ("keep", "replace")
UNCERTAINTY_METHODS = ("tta", "mc-dropout", "none")
EXPORT_FORMATS = ("nifti", "nrrd", "stl", "obj", "dicom-seg")
# The Slicer module's parameter node stores lists as check boxes and baselines by name.
CLASS_FIELDS = {"liver": "explainLiver", "tumor": "explainTumor"}
METHOD_FIELDS = {
    "gradcam": "methodGradCam",
    "gradcam++": "methodGradCamPlusPlus",
    "integrated-gradients": "methodIntegratedGradients",
}
EXPORT_FIELDS = {
    "nifti": "exportNifti",
    "nrrd": "exportNrrd",
    "stl": "exportStl",
    "obj": "exportObj",
    "dicom-seg": "exportDicomSeg",
}
IG_BASELINES: dict[str, float | str] = {"air": -1000.0, "water": 0.0, "blurred": "blurred"}

# Options that change what a run writes (a batch case made with others is not reused); the
# rest (device, batch size, display) change how fast it runs or how it looks.
OUTPUT_OPTIONS = (
    "model",
    "explainClasses",
    "explainMethods",
    "camLayer",
    "uncertainty",
    "integratedGradientsSteps",
    "integratedGradientsBaseline",
    "allowNonHU",
)
# ... and those that do not (exports are compared apart: a case may hold more than asked for)
OTHER_OPTIONS = (
    "device",
    "batchSize",
    "showResults",
    "existingResults",
    "volumeRendering",
    "ctVolumeRendering",
    "exports",
)


@dataclass(frozen=True)
class SegmentAndExplainOptions:
    """How to segment and explain one CT; every field has the module's default."""

    model: str = DEFAULT_MODEL  # catalog name or checkpoint path
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    explainClasses: tuple[str, ...] = EXPLAINABLE_CLASSES  # (Slicer's style)
    explainMethods: tuple[str, ...] = ("gradcam",)
    camLayer: str | None = None  # (None: the model's measured default)
    uncertainty: str = "tta"  # tta, mc-dropout or none
    integratedGradientsSteps: int = 32
    integratedGradientsBaseline: float | str = -1000.0  # (HU or "blurred")
    batchSize: int = 16  # (slices per forward pass)
    allowNonHU: bool = False  # (accept a CT whose values are not Hounsfield units)
    showResults: bool = True  # (show the outputs in the slice and 3D views)
    existingResults: str = "keep"  # (earlier results of the input: keep or replace)
    volumeRendering: bool = True  # (3D: volume rendering, else surfaces)
    ctVolumeRendering: bool = False  # (3D: render the CT as well)
    exports: tuple[str, ...] = ()  # files a batch case also gets: nifti nrrd stl obj dicom-seg

    def __post_init__(self) -> None:
        # lists from the console or JSON become tuples: the object stays hashable and frozen
        for name in ("explainClasses", "explainMethods", "exports"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value or ()))

    @classmethod
    def fromMapping(cls, values: Mapping[str, Any]) -> SegmentAndExplainOptions:
        """Options from keyword values; raises ``ValueError`` naming unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"Unknown Segment & Explain option(s) {unknown}: choose from {sorted(names)}."
            )
        return cls(**dict(values))

    @classmethod
    def fromParameterNode(cls, params: Any, **changes: Any) -> SegmentAndExplainOptions:
        """Options from the Segment & Explain module's parameter node (its check boxes become
        lists, the baseline's name a value), with ``changes`` on top."""
        methods = tuple(name for name, field in METHOD_FIELDS.items() if getattr(params, field))
        classes = tuple(name for name, field in CLASS_FIELDS.items() if getattr(params, field))
        values = {
            "model": params.model,
            "device": params.device,
            "explainClasses": classes if methods else (),
            "explainMethods": methods,
            "camLayer": params.camLayer or None,
            "uncertainty": params.uncertainty,
            "integratedGradientsSteps": params.integratedGradientsSteps,
            "integratedGradientsBaseline": IG_BASELINES[params.integratedGradientsBaseline],
            "batchSize": params.batchSize,
            "allowNonHU": params.allowNonHU,
            "volumeRendering": params.volumeRendering,
            "ctVolumeRendering": params.ctVolumeRendering,
            "exports": tuple(
                name for name, field in EXPORT_FIELDS.items() if getattr(params, field)
            ),
        }
        return cls.fromMapping({**values, **changes})

    def outputSettings(self) -> dict[str, Any]:
        """The options that change what a run writes (``OUTPUT_OPTIONS``)."""
        return {name: getattr(self, name) for name in OUTPUT_OPTIONS}

    def replace(self, **changes: Any) -> SegmentAndExplainOptions:
        """A copy with ``changes`` (unknown names raise ``ValueError``)."""
        return self.fromMapping({**self.asDict(), **changes})

    def asDict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> SegmentAndExplainOptions:
        """Raise ``ValueError`` naming the first option out of range, before any work;
        returns the options with repeated methods dropped."""
        _check_numbers(
            self.batchSize, self.integratedGradientsSteps, self.integratedGradientsBaseline
        )
        unknown = [name for name in self.explainClasses if name not in EXPLAINABLE_CLASSES]
        if unknown:
            raise ValueError(f"Cannot explain {unknown}: choose from {list(EXPLAINABLE_CLASSES)}.")
        if self.existingResults not in EXISTING_RESULTS:
            raise ValueError(
                f"existingResults={self.existingResults!r}: choose from {list(EXISTING_RESULTS)}."
            )
        if self.uncertainty not in UNCERTAINTY_METHODS:
            raise ValueError(
                f"unknown uncertainty {self.uncertainty!r}: use {', '.join(UNCERTAINTY_METHODS)}"
            )
        unknown = [name for name in self.exports if name not in EXPORT_FORMATS]
        if unknown:
            raise ValueError(f"Cannot export {unknown}: choose from {list(EXPORT_FORMATS)}.")
        from .explain.methods import check_methods

        return self.replace(explainMethods=tuple(check_methods(self.explainMethods)))

    def engineFor(self, network: Any, metadata: Any) -> Any:
        """The slice engine that runs these options with a loaded model (``load_checkpoint``):
        device, batch size, Grad-CAM layer and IG settings from here, the tumour threshold and
        minimum size from the checkpoint."""
        from .segment.inference import SliceInferenceEngine, choose_device

        return SliceInferenceEngine(
            network,
            metadata.input_spec(),
            choose_device(self.device),
            self.batchSize,
            cam_layer=self.camLayer,
            ig_options={
                "steps": self.integratedGradientsSteps,
                "baseline": self.integratedGradientsBaseline,
            },
            tumor_bias=metadata.tumor_bias,
            min_tumor_ml=metadata.min_tumor_ml,
        )

    @property
    def methodsToRun(self) -> list[str]:
        """The explanation methods that run: none when no class is explained."""
        return list(self.explainMethods) if self.explainClasses else []


def _check_numbers(batch_size: int, ig_steps: int, ig_baseline: float | str) -> None:
    """Raise ``ValueError`` naming an option out of range, before any work starts."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batchSize={batch_size!r}: give a whole number of slices, at least 1.")
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 1:
        raise ValueError(
            f"integratedGradientsSteps={ig_steps!r}: give a whole number of steps, at least 1."
        )
    if ig_baseline != "blurred" and not (
        isinstance(ig_baseline, int | float) and math.isfinite(ig_baseline)
    ):
        raise ValueError(
            f"integratedGradientsBaseline={ig_baseline!r}: give a value in HU or 'blurred'."
        )
