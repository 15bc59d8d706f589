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

from ..constants import CLASS_NAMES, DEFAULT_MODEL
from ..errors import Cancelled, InputError
from ..models.catalog import read_catalog, resolve_model
from ..options import SegmentAndExplainOptions
from ..segment.input_checks import check_ct_array
from ..segment.orientation import canonical_orientation
from . import scene as mrml
from .display3d import (
    centre_3d_views,
    segmentation_bounds,
    set_3d_mode,
    show_labels_volume_rendering,
    volume_rendering_display,
)
from .output_nodes import Display3D, RunInfo, add_output_nodes
from .previous_results import (
    previous_outputs,
    previous_runs,
    remove_outputs,
)
from .results import SegmentAndExplainResult, result_from_run

# torch-dependent parts (checkpoints, inference, explain, networks) are imported inside the
# methods that use them, so the Slicer module loads and can offer to install torch first.


def check_input_volume(volume_node: Any) -> None:
    """Raise ``InputError`` if the node is not a 3D single-channel scalar volume; its values
    and geometry are checked on the array (``input_checks.check_ct_array``)."""
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

    def modelCatalog(self) -> list[dict[str, Any]]:
        """Catalog entries: name, source (bundled, user, download), available, sha256, ..."""
        return read_catalog()

    @staticmethod
    def modelCatalogProblem() -> str | None:
        """Why the user's model catalog is left out (one line, with how to fix it), or None;
        the bundled models stay available either way."""
        from ..models.catalog import user_catalog_problem

        return user_catalog_problem()

    def downloadModel(
        self,
        model: str,
        progressCallback: Callable[[float, str], None] | None = None,
        cancelEvent: threading.Event | None = None,
    ) -> Path:
        """Download a catalog model, verify its SHA-256 and cache it; returns its path."""
        from ..models.download import download_model

        return download_model(model, progress=progressCallback, cancel=cancelEvent)

    def importModel(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """Add a model file (e.g. given to an offline site) after verifying it; returns its
        catalog entry (a listed download if its SHA-256 matches one, else a user model)."""
        from ..models.download import import_model

        return import_model(path, name=name)

    def loadModel(self, model: str = DEFAULT_MODEL) -> tuple[Any, Any]:
        """Network and ``CheckpointMetadata`` for a catalog name or checkpoint path (cached)."""
        from ..models.checkpoints import load_checkpoint

        path = resolve_model(model)
        key = (str(path.resolve()), str(path.stat().st_mtime_ns))
        if key not in self._models:
            self._models[key] = load_checkpoint(path)
        return self._models[key]

    def withPrivateScene(self) -> LiverXAILogic:
        """A Logic on a new scene and application logic of its own (no views), sharing this
        one's loaded models: batch cases nobody looks at are made there."""
        from .headless import create_headless_application

        app = create_headless_application()
        logic = LiverXAILogic(app.scene, app.appLogic)
        logic._models = self._models
        logic._application = app  # the application logic holds its module logics weakly
        return logic

    def layerChoices(self, model: str = DEFAULT_MODEL) -> list[str]:
        """Grad-CAM layers of a model: its default first, then every convolution."""
        from ..explain.methods import layer_choices

        return layer_choices(self.loadModel(model)[0])

    @staticmethod
    def describeDevice(device: str = "auto") -> str:
        """Which device would run, and why, e.g. "CPU: no CUDA build of torch installed"."""
        from .dependencies import device_sentence

        return device_sentence(device)

    def moduleLogic(self, name: str) -> Any:
        logic = self.appLogic.GetModuleLogic(name)
        if logic is None:
            raise RuntimeError(f"The {name} module logic is not available in this application.")
        return logic

    # Segment & Explain --------------------------------------------------------------------
    def segmentAndExplain(
        self,
        inputVolumeNode: Any,
        options: SegmentAndExplainOptions | None = None,
        progressCallback: Callable[[float, str], None] | None = None,
        cancelEvent: threading.Event | None = None,
        **changes: Any,
    ) -> SegmentAndExplainResult:
        """Segment liver and tumour in ``inputVolumeNode`` and explain the chosen classes.

        ``options`` (default: the module's defaults) with keyword ``changes`` on top
        (``segmentAndExplain(node, uncertainty="none")``) say how. Adds, with the input's
        geometry and in one subject hierarchy folder: a labelmap (0 background, 1 liver,
        2 tumor), heatmaps per class and method, uncertainty and a segmentation with surfaces.
        Raises ``ValueError`` (options), ``InputError`` (input), ``CheckpointError`` (model) or
        ``Cancelled``; a failure leaves the scene as it was.
        """
        from ..segment.case_arrays import CaseArrays
        from ..segment.inference import describe_device
        from ..segment.pipeline import run_pipeline
        from ..segment.uncertainty import UncertaintySpec

        started = time.perf_counter()
        report = progressCallback or (lambda _fraction, _message: None)
        check_input_volume(inputVolumeNode)
        options = (options or SegmentAndExplainOptions()).replace(**changes).validate()
        uncertainty_spec = UncertaintySpec.from_name(options.uncertainty)

        array, ijk_to_ras = mrml.read_volume_node(inputVolumeNode)
        checked = check_ct_array(array, ijk_to_ras, inputVolumeNode.GetName(), options.allowNonHU)
        array = checked.array
        report(0.0, "Loading model")
        network, metadata = self.loadModel(options.model)
        engine = options.engineFor(network, metadata)
        timings = {"preprocess": time.perf_counter() - started}
        class_ids = [CLASS_NAMES.index(name) for name in options.explainClasses]
        result = run_pipeline(
            array, ijk_to_ras, engine, class_ids, options.methodsToRun, uncertainty_spec,
            progress=lambda fraction, message: report(0.02 + 0.86 * fraction, message),
            cancel=cancelEvent,
        )  # fmt: skip
        timings.update(result.timings)
        if cancelEvent is not None and cancelEvent.is_set():
            raise Cancelled("Segment & Explain was cancelled.")

        mark = time.perf_counter()
        report(0.9, "Adding results to the scene")
        nodes, run = self._addOutputNodes(inputVolumeNode, result, options)
        timings["scene"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - started
        report(1.0, "Done")
        return result_from_run(
            result,
            nodes,
            run,
            metadata,
            device_text=describe_device(options.device),
            uncertainty=uncertainty_spec.describe() if uncertainty_spec else "none",
            timings=timings,
            warnings=checked.warnings + result.warnings,
            arrays=CaseArrays.from_pipeline(result, ijk_to_ras),
        )

    def _addOutputNodes(
        self, inputVolumeNode: Any, result: Any, options: SegmentAndExplainOptions
    ) -> tuple[dict[str, Any], RunInfo]:
        """Add a run's output nodes (all or none) and remove the input's earlier results if
        asked; returns the nodes by role and the run's name and date."""
        from ..segment.uncertainty import UncertaintySpec

        uncertainty_spec = UncertaintySpec.from_name(options.uncertainty)
        model = options.model
        run = RunInfo(Path(str(model)).name, time.strftime("%Y-%m-%d %H:%M:%S"))
        while run.name in previous_runs(self.scene, inputVolumeNode):  # two runs in a second
            run = RunInfo(run.model, run.created, run.repeat + 1)
        nodes = add_output_nodes(
            self.scene,
            self.moduleLogic,
            inputVolumeNode,
            result.orientation,
            result.labels,
            result.heatmaps,
            result.uncertainty,
            uncertainty_spec.describe() if uncertainty_spec else "",
            run,
            options.showResults,
            Display3D(options.volumeRendering, options.ctVolumeRendering),
        )
        if options.existingResults == "replace":
            remove_outputs(self.scene, previous_outputs(self.scene, inputVolumeNode, run.name))
        return nodes, run

    # Batch ----------------------------------------------------------------------------------
    def processFiles(
        self,
        inputPaths: Sequence[str | Path],
        outputDir: str | Path,
        progressCallback: Callable[[float, str], None] | None = None,
        cancelEvent: threading.Event | None = None,
        overwrite: bool = False,
        keepInScene: bool = False,
        options: SegmentAndExplainOptions | None = None,
        **changes: Any,
    ) -> Any:
        """Segment & Explain each file (NIfTI, NRRD or DICOM series folder) into
        ``outputDir/<case>/`` with one loaded model, going on past a bad case; writes
        ``summary.csv`` and adds a table node "LiverXAI batch summary". ``options`` (a
        ``SegmentAndExplainOptions``, with keyword ``changes`` on top; ``exports`` are written
        into each case folder) go to ``segmentAndExplain``. Returns the ``BatchResult`` (rows,
        ``tableNode``)."""
        from ..batch.runner import process_files
        from .batch_table import summary_table_node

        result = process_files(
            self,
            inputPaths,
            outputDir,
            progress=progressCallback,
            cancel=cancelEvent,
            overwrite=overwrite,
            keep_in_scene=keepInScene,
            options=options,
            **changes,
        )
        result.tableNode = summary_table_node(result, self.scene)
        return result

    def processFolder(
        self,
        inputDir: str | Path,
        outputDir: str | Path,
        progressCallback: Callable[[float, str], None] | None = None,
        cancelEvent: threading.Event | None = None,
        overwrite: bool = False,
        options: SegmentAndExplainOptions | None = None,
        **changes: Any,
    ) -> Any:
        """``processFiles`` for every case in a folder: NIfTI/NRRD files and DICOM series
        sub-folders (hidden files, our own outputs and other files are ignored)."""
        from ..batch.cases import find_cases

        return self.processFiles(
            find_cases(inputDir),
            outputDir,
            progressCallback,
            cancelEvent,
            overwrite,
            options=options,
            **changes,
        )

    def writeReport(
        self, result: SegmentAndExplainResult, inputVolumeNode: Any, outputDir: Any
    ) -> Path:
        """Write ``STEM_report.json`` and the self-contained ``STEM_report.html`` for a result
        into ``outputDir``; returns the HTML file's path."""
        from ..io.result_files import write_reports

        ct = mrml.read_volume_node(inputVolumeNode)[0]
        return write_reports(result, ct, Path(outputDir), inputVolumeNode.GetName())

    def exportResults(
        self,
        result: SegmentAndExplainResult,
        inputVolumeNode: Any,
        outputDir: str | Path,
        formats: Sequence[str] = ("nifti", "stl"),
        dicomSeriesDir: str | Path | None = None,
        progressCallback: Callable[[float, str], None] | None = None,
    ) -> dict[str, list[Path]]:
        """Write a result as ``nifti``, ``nrrd``, ``stl``, ``obj`` and/or ``dicom-seg`` files
        into ``outputDir``; returns the paths by format. DICOM SEG needs the CT's DICOM series
        (``dicomSeriesDir``, or Slicer's DICOM database for a CT loaded from it)."""
        from .exports import export_results

        return export_results(
            self.scene,
            inputVolumeNode,
            result,
            Path(outputDir),
            formats,
            dicom_series_dir=dicomSeriesDir,
            progress=progressCallback,
        )

    def sliceCentreRAS(self, inputVolumeNode: Any, canonicalSlice: int) -> tuple[float, ...]:
        """RAS position of the centre of a canonical axial slice of the input volume."""
        array, ijk_to_ras = mrml.read_volume_node(inputVolumeNode)
        orientation = canonical_orientation(ijk_to_ras)
        shape = orientation.canonical_shape(array.shape)
        k, j, i = orientation.array_index((canonicalSlice, shape[1] // 2, shape[2] // 2), shape)
        ras = ijk_to_ras @ np.array([i, j, k, 1.0])
        return tuple(float(v) for v in ras[:3])

    def jumpToSlice(self, inputVolumeNode: Any, canonicalSlice: int) -> tuple[float, ...]:
        """Move every slice view to a review-list slice (``canonicalSlice`` of its item)."""
        from slicer import vtkMRMLSliceNode

        r, a, s = self.sliceCentreRAS(inputVolumeNode, canonicalSlice)
        vtkMRMLSliceNode.JumpAllSlices(self.scene, r, a, s, vtkMRMLSliceNode.OffsetJumpSlice)
        return r, a, s

    def setVolumeRendering(self, result: SegmentAndExplainResult, enabled: bool) -> None:
        """Show a result in 3D as a volume rendering (``enabled``) or as surfaces."""
        labelmap = self.scene.GetNodeByID(result.labelmapNodeID)
        segmentation = self.scene.GetNodeByID(result.segmentationNodeID)
        if labelmap is None or segmentation is None:
            raise InputError("The result's nodes are no longer in the scene.")
        if enabled and volume_rendering_display(labelmap) is None:
            show_labels_volume_rendering(self.moduleLogic("VolumeRendering"), labelmap)
        set_3d_mode(labelmap, segmentation, "volume-rendering" if enabled else "surfaces")

    def centre3DViews(self, result: SegmentAndExplainResult) -> int:
        """Aim every 3D view at the result's liver; returns the number of views moved."""
        segmentation = self.scene.GetNodeByID(result.segmentationNodeID)
        bounds = segmentation_bounds(segmentation) if segmentation is not None else None
        return centre_3d_views(self.scene, bounds) if bounds is not None else 0

    def previousResults(self, inputVolumeNode: Any) -> list[str]:
        """Earlier LiverXAI runs on this input still in the scene ("model, date" each)."""
        return previous_runs(self.scene, inputVolumeNode)
