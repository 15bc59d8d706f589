"""What one Segment & Explain run returns: node IDs, volumes, counts, timings and the arrays.

The node IDs say where the outputs are in the scene; ``arrays`` (a ``CaseArrays``) holds the
labels, maps and uncertainty the run produced, from which files and reports are written.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..segment.case_arrays import CaseArrays
    from ..segment.pipeline import PipelineResult


@dataclass
class SegmentAndExplainResult:
    labelmapNodeID: str
    heatmapNodeIDs: dict[str, str]
    segmentationNodeID: str
    liverVolumeMl: float  # whole organ, tumour included
    tumorVolumeMl: float
    tumorCount: int
    tumorVolumesMl: list[float] = field(default_factory=list)
    reviewSlices: list[int] = field(default_factory=list)  # input K indices, worst first
    heatmapMassInsideLiver: float = float("nan")
    heatmapNormalization: str = ""
    modelName: str = ""
    modelInfo: dict[str, Any] = field(default_factory=dict)  # architecture, training data, ...
    device: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    explanationNodeIDs: dict[str, dict[str, str]] = field(default_factory=dict)  # method→class
    uncertaintyNodeID: str = ""
    uncertaintyMethod: str = "none"
    reviewItems: list[dict[str, Any]] = field(default_factory=list)  # worst first, with reasons
    explanationQuality: dict[str, Any] = field(default_factory=dict)
    lesions: list[dict[str, Any]] = field(default_factory=list)  # largest first
    integratedGradientsEstimateSeconds: float | None = None
    run: str = ""  # "model, date": names the run in descriptions and the subject hierarchy
    created: str = ""
    resultFolderItemID: int = 0  # the run's subject hierarchy folder
    volumeRenderingNodeID: str = ""  # the labelmap's volume rendering display node
    warnings: list[str] = field(default_factory=list)  # input and result, in plain words
    source: dict[str, Any] = field(default_factory=dict)  # the input file or DICOM series
    arrays: CaseArrays | None = field(default=None, repr=False, compare=False)  # not in JSON

    def attach_source(self, source: dict[str, Any]) -> None:
        """Record where the input came from (``volume_io.read_volume_and_source``); the
        reader's warnings (e.g. a DICOM image left out) come first among the warnings."""
        self.source = dict(source)
        self.warnings = [*source.get("warnings", []), *self.warnings]

    def summary(self, warnings: bool = True) -> str:
        """A few lines for the module's results area and the console (``warnings`` first,
        unless the caller shows them elsewhere)."""
        lines = [f"Warning: {text}" for text in self.warnings] if warnings else []
        lines += [
            f"Liver: {self.liverVolumeMl:.1f} mL (tumour included)",
            f"Tumour: {self.tumorVolumeMl:.1f} mL in {self.tumorCount} "
            f"lesion{'s' if self.tumorCount != 1 else ''}",
        ]
        for number, lesion in enumerate(self.lesions[:5], start=1):
            confidence = lesion.get("confidence")
            sure = f", confidence {confidence:.2f}" if confidence is not None else ""
            lines.append(
                f"  lesion {number}: {lesion['volume_ml']:.1f} mL, "
                f"{lesion['longest_axial_diameter_mm']:.0f} mm{sure}"
            )
        if self.reviewItems:
            lines.append(f"Slices to review ({len(self.reviewItems)}):")
            lines += [f"  {review_item_text(i)}" for i in self.reviewItems[:5]]
        else:
            lines.append("Slices to review: none")
        lines.append(
            f"Model {self.modelName} on {self.device}, {self.timings.get('total', 0.0):.1f} s"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Every field but the arrays, as JSON-ready values."""
        return {
            f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "arrays"
        }


def review_item_text(item: dict[str, Any]) -> str:
    """One review item as a line: "slice 23: reason", or the reason alone when it names its
    slice range itself (merged items: "slices 19–27: ...")."""
    if item.get("firstSlice", item["slice"]) != item.get("lastSlice", item["slice"]):
        return item["reason"]
    return f"slice {item['slice']}: {item['reason']}"


def review_item_slices(item: dict[str, Any]) -> list[int]:
    """The input slices an item covers (its range for a merged item)."""
    first, last = item.get("firstSlice", item["slice"]), item.get("lastSlice", item["slice"])
    return list(range(min(first, last), max(first, last) + 1))


def result_from_run(
    pipeline: PipelineResult,
    nodes: dict[str, Any],
    run: Any,
    metadata: Any,
    device_text: str,
    uncertainty: str,
    timings: dict[str, float],
    warnings: list[str],
    arrays: CaseArrays,
) -> SegmentAndExplainResult:
    """The result of a run: the pipeline's measures, the output nodes (``add_output_nodes``)
    of the run (``RunInfo``) and the model's description (``CheckpointMetadata``)."""
    from ..explain.methods import METHODS

    methods = list(pipeline.heatmaps)
    primary = methods[0] if methods else None
    statistics = pipeline.statistics
    return SegmentAndExplainResult(
        labelmapNodeID=nodes["labelmap"].GetID(),
        heatmapNodeIDs=dict(nodes["heatmaps"].get(primary, {})),
        segmentationNodeID=nodes["segmentation"].GetID(),
        liverVolumeMl=statistics.liver_ml,
        tumorVolumeMl=statistics.tumor_ml,
        tumorCount=statistics.tumor_count,
        tumorVolumesMl=list(statistics.tumor_volumes_ml),
        reviewSlices=list(
            dict.fromkeys(s for item in pipeline.review for s in review_item_slices(item))
        ),
        heatmapMassInsideLiver=_inside_fraction(pipeline.quality, primary, "liver"),
        heatmapNormalization=METHODS[primary].normalization if primary else "",
        modelName=run.model,
        modelInfo=model_info(metadata),
        device=device_text,
        timings=timings,
        explanationNodeIDs=nodes["heatmaps"],
        uncertaintyNodeID=nodes["uncertainty"].GetID() if "uncertainty" in nodes else "",
        uncertaintyMethod=uncertainty,
        reviewItems=pipeline.review,
        explanationQuality=pipeline.quality,
        lesions=[
            {**lesion.to_dict(), "slices": sorted(pipeline.input_slice(s) for s in lesion.slices)}
            for lesion in pipeline.lesions
        ],
        integratedGradientsEstimateSeconds=pipeline.integrated_gradients_estimate,
        run=run.name,
        created=run.created,
        warnings=warnings,
        resultFolderItemID=nodes["folder"],
        volumeRenderingNodeID=nodes["volumeRendering"],
        arrays=arrays,
    )


def model_info(metadata: Any) -> dict[str, Any]:
    """What the report says about the model (``CheckpointMetadata``): no local paths leak."""
    return {
        "architecture": metadata.architecture,
        "input_size": list(metadata.input_size),
        "hu_window": list(metadata.hu_window),
        "num_slices": metadata.num_slices,
        "slice_step_mm": metadata.slice_step_mm,
        "training_data": ["/".join(Path(p).parts[-2:]) for p in metadata.training_data],
        "notes": metadata.notes,
        "created": metadata.created,
    }


def _inside_fraction(quality: dict[str, Any], method: str | None, class_name: str) -> float:
    if method is None:
        return float("nan")
    value = quality["perClass"].get(method, {}).get(class_name, {})
    inside = value.get("insideFraction")
    return float("nan") if inside is None else float(inside)
