"""LiverXAILogic: Segment & Explain on the MRML scene it is given.

The logic wires the library's steps to a scene: read the input node, run the network slice by
slice with Grad-CAM, clean the result in 3D, and add the output nodes. It never modifies the
input node, and a failure or a cancel leaves no half-made nodes behind. Module logics are
looked up by name from the application logic, so the same code runs in Slicer and headless.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import scene as mrml
from .catalog import read_catalog, resolve_model
from .constants import CLASS_NAMES, DEFAULT_MODEL, EXPLAINABLE_CLASSES, LIVER
from .errors import Cancelled, InputError, NotHounsfieldError
from .orientation import CanonicalOrientation, canonical_orientation, canonical_spacing
from .postprocessing import clean_labels, label_statistics
from .results import SegmentAndExplainResult

# torch-dependent parts (checkpoints, inference, explain, networks) are imported inside the
# methods that use them, so the Slicer module loads and can offer to install torch first.


def check_input_volume(volume_node: Any, allow_non_hu: bool = False) -> None:
    """Raise ``InputError`` naming what is wrong with the input for Segment & Explain."""
    if volume_node is None:
        raise InputError("No input volume selected. Choose a CT volume.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA(
        "vtkMRMLLabelMapVolumeNode"
    ):
        raise InputError(f"{volume_node.GetName()} is not a CT volume (a scalar volume is needed).")
    image = volume_node.GetImageData()
    name = volume_node.GetName()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"{name} is empty: it holds no voxels.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfScalarComponents()} values per voxel (a vector, colour "
            "or 4D volume); a single-channel 3D CT volume is needed."
        )
    dimensions = image.GetDimensions()
    if min(dimensions) < 2:
        raise InputError(
            f"{name} is a 2D image ({dimensions[0]}×{dimensions[1]}×{dimensions[2]}); "
            "a 3D CT volume is needed."
        )
    low, high = image.GetScalarRange()
    if low == high:
        raise InputError(
            f"{name} is constant (every voxel is {low:g}); there is nothing to segment."
        )
    if not allow_non_hu and (low > -500 or high < 100):
        raise NotHounsfieldError(
            f"{name} does not look like CT in Hounsfield units: values run from {low:g} to "
            f"{high:g}, while CT has air near -1000 HU and soft tissue near 40 HU. Results may be "
            "meaningless; run anyway only if you are sure."
        )


class LiverXAILogic:
    """Segment & Explain for a scene; every button of the module calls into this class."""

    def __init__(self, scene: Any = None, appLogic: Any = None) -> None:
        if scene is None or appLogic is None:
            import slicer

            scene = scene if scene is not None else slicer.mrmlScene
            appLogic = appLogic if appLogic is not None else slicer.app.applicationLogic()
        self.scene = scene
        self.appLogic = appLogic
        self._models: dict[tuple[str, str], tuple[Any, Any]] = {}

    # Models -------------------------------------------------------------------------------
    def availableModels(self) -> list[str]:
        return [entry["name"] for entry in read_catalog()]

    def loadModel(self, model: str = DEFAULT_MODEL) -> tuple[Any, Any]:
        """Network and ``CheckpointMetadata`` for a catalog name or checkpoint path (cached)."""
        from .checkpoints import load_checkpoint

        path = resolve_model(model)
        key = (str(path.resolve()), str(path.stat().st_mtime_ns))
        if key not in self._models:
            self._models[key] = load_checkpoint(path)
        return self._models[key]

    @staticmethod
    def describeDevice(device: str = "auto") -> str:
        """Which device would run, and why, e.g. "CPU: no CUDA build of torch installed"."""
        try:
            from .inference import describe_device
        except ImportError:
            return "torch is not installed"
        return describe_device(device)

    def moduleLogic(self, name: str) -> Any:
        logic = self.appLogic.GetModuleLogic(name)
        if logic is None:
            raise RuntimeError(f"The {name} module logic is not available in this application.")
        return logic

    # Segment & Explain --------------------------------------------------------------------
    def segmentAndExplain(
        self,
        inputVolumeNode: Any,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        explainClasses: Sequence[str] = EXPLAINABLE_CLASSES,
        batchSize: int = 16,
        allowNonHU: bool = False,
        progressCallback: Callable[[float, str], None] | None = None,
        cancelEvent: threading.Event | None = None,
        showResults: bool = True,
    ) -> SegmentAndExplainResult:
        """Segment liver and tumour in ``inputVolumeNode`` and explain the chosen classes.

        Adds a labelmap (0 background, 1 liver, 2 tumor), one Grad-CAM volume per explained
        class (values in [0, 1], normalised once per volume) and a segmentation with closed
        surfaces, all with the input's geometry. Raises ``InputError`` for unusable input,
        ``CheckpointError`` for a bad model and ``Cancelled`` when ``cancelEvent`` is set;
        in every failure the scene is left as it was.
        """
        from .explain import (
            HEATMAP_NORMALIZATION,
            NORMALIZATION_DESCRIPTIONS,
            mass_inside,
            normalize_volume,
            slices_to_review,
        )
        from .inference import SliceInferenceEngine, choose_device, describe_device
        from .networks import gradcam_layer

        timings: dict[str, float] = {}
        started = time.perf_counter()
        report = progressCallback or (lambda _fraction, _message: None)
        check_input_volume(inputVolumeNode, allowNonHU)
        unknown = [name for name in explainClasses if name not in EXPLAINABLE_CLASSES]
        if unknown:
            raise ValueError(f"Cannot explain {unknown}: choose from {list(EXPLAINABLE_CLASSES)}.")
        class_ids = [CLASS_NAMES.index(name) for name in explainClasses]

        report(0.0, "Loading model")
        network, metadata = self.loadModel(model)
        torch_device = choose_device(device)
        array, ijk_to_ras = mrml.read_volume_node(inputVolumeNode)
        orientation = canonical_orientation(ijk_to_ras)
        spacing = canonical_spacing(ijk_to_ras, orientation)
        timings["preprocess"] = time.perf_counter() - started

        engine = SliceInferenceEngine(
            network, metadata.input_spec(), torch_device, gradcam_layer(network), batchSize
        )
        outputs = engine.run(
            orientation.apply(array),
            class_ids,
            progress=lambda fraction, message: report(0.05 + 0.8 * fraction, message),
            cancel=cancelEvent,
        )
        timings["inference"] = outputs.seconds

        mark = time.perf_counter()
        report(0.86, "Cleaning up in 3D")
        labels = clean_labels(outputs.labels, spacing)
        statistics = label_statistics(labels, spacing)
        heatmaps = {cid: normalize_volume(outputs.heatmaps[cid]) for cid in class_ids}
        organ = labels >= LIVER
        liver_map = heatmaps.get(LIVER)
        inside = mass_inside(liver_map, organ) if liver_map is not None else float("nan")
        review = slices_to_review(liver_map, organ) if liver_map is not None else []
        timings["postprocess"] = time.perf_counter() - mark
        if cancelEvent is not None and cancelEvent.is_set():
            raise Cancelled("Segment & Explain was cancelled.")

        mark = time.perf_counter()
        report(0.9, "Adding results to the scene")
        nodes = self._addOutputNodes(
            inputVolumeNode,
            orientation,
            labels,
            heatmaps,
            model,
            showResults,
            NORMALIZATION_DESCRIPTIONS[HEATMAP_NORMALIZATION],
        )
        timings["scene"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started
        report(1.0, "Done")
        return SegmentAndExplainResult(
            labelmapNodeID=nodes["labelmap"].GetID(),
            heatmapNodeIDs={CLASS_NAMES[c]: nodes[CLASS_NAMES[c]].GetID() for c in class_ids},
            segmentationNodeID=nodes["segmentation"].GetID(),
            liverVolumeMl=statistics.liver_ml,
            tumorVolumeMl=statistics.tumor_ml,
            tumorCount=statistics.tumor_count,
            tumorVolumesMl=list(statistics.tumor_volumes_ml),
            reviewSlices=[
                self._inputSliceIndex(orientation, labels.shape[0], s) for s, _ in review
            ],
            heatmapMassInsideLiver=inside,
            heatmapNormalization=HEATMAP_NORMALIZATION,
            modelName=Path(str(model)).name,
            modelInfo={
                "architecture": metadata.architecture,
                "input_size": list(metadata.input_size),
                "hu_window": list(metadata.hu_window),
                "num_slices": metadata.num_slices,
                "training_data": [Path(p).name for p in metadata.training_data],
                "notes": metadata.notes,
                "created": metadata.created,
            },
            device=describe_device(device),
            timings=timings,
        )

    @staticmethod
    def _inputSliceIndex(orientation: CanonicalOrientation, depth: int, index: int) -> int:
        """Canonical axial index → index along the input axis that runs inferior-superior
        (the K index of an axially stored scan, as Slicer numbers its slices)."""
        return depth - 1 - index if orientation.flips[0] else index

    def _addOutputNodes(
        self,
        inputVolumeNode: Any,
        orientation: CanonicalOrientation,
        labels: np.ndarray,
        heatmaps: dict[int, np.ndarray],
        model: str,
        showResults: bool,
        normalization_description: str,
    ) -> dict[str, Any]:
        """Create every output node, or none: on failure the nodes made so far are removed."""
        scene = self.scene
        base = inputVolumeNode.GetName()
        created: dict[str, Any] = {}
        existing = mrml.node_ids(scene)
        try:
            labelmap = mrml.add_output_volume(
                scene, inputVolumeNode, orientation.invert(labels), f"{base} LiverXAI labels", True
            )
            created["labelmap"] = labelmap
            mrml.style_labelmap(scene, labelmap)
            labelmap.SetDescription(f"LiverXAI segmentation by model {model}")
            description = normalization_description
            for class_id, heatmap in heatmaps.items():
                name = CLASS_NAMES[class_id]
                node = mrml.add_output_volume(
                    scene, inputVolumeNode, orientation.invert(heatmap), f"{base} Grad-CAM {name}"
                )
                created[name] = node
                mrml.style_heatmap(
                    scene, node, f"Grad-CAM for {name}, model {model}. {description}"
                )
            created["segmentation"] = mrml.add_segmentation(
                scene,
                self.moduleLogic("Segmentations"),
                labelmap,
                inputVolumeNode,
                f"{base} LiverXAI segmentation",
            )
            if showResults:
                first_heatmap = next((created[CLASS_NAMES[c]] for c in heatmaps), None)
                mrml.show_in_slice_views(scene, inputVolumeNode, first_heatmap, labelmap)
            transform_id = inputVolumeNode.GetTransformNodeID()
            for node in created.values():  # outputs follow the input's parent transform
                node.SetAndObserveTransformNodeID(transform_id)
        except BaseException:
            mrml.remove_nodes_except(scene, existing)
            raise
        return created
