"""Export a Segment & Explain result with one action: volumes, surfaces and a DICOM SEG.

Formats (file names start with ``STEM``, by default the input node's name):

* ``nifti`` (``.nii.gz``) and ``nrrd`` (``.nrrd``): the labelmap (``STEM_label``), every
  explanation map (``STEM_gradcam_liver``, ...) and the uncertainty map, each with its own
  node's geometry (maps keep their coarser grid, see :mod:`map_grid`).
* ``stl`` and ``obj``: the closed surfaces of the liver and tumour segments, one file per
  segment (``STEM_liver.stl``; ``STEM_liver.obj`` with its ``.mtl``), written by Slicer's
  Segmentations logic in **LPS** millimetres (Slicer's default for surface files, and the
  physical space of DICOM, ITK and the NIfTI/NRRD files written here); a segment with no
  voxels has no surface and gets no file.
* ``dicom-seg`` (``STEM_seg.dcm``): see :mod:`dicom_seg`; it needs the source DICOM series,
  chosen in a folder as the CT reader chooses it (:mod:`dicom_series`). Check a command-line
  input with :func:`check_dicom_seg_export` before the long run.

Volume files keep the node's own geometry (a parent transform is not applied, as when Slicer
saves a volume); surfaces are exported by Slicer's own exporter, which applies it. Every file
is written atomically, and a DICOM SEG that cannot be made is refused before anything is
written. The formats, the file-name stem and the checks made before writing are
:mod:`export_checks`'s (their names are importable from here too).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.dicom_seg import DicomSegError
from ..io.result_files import FILE_SLUGS
from ..io.volumes import write_volume
from . import scene as mrml
from .dicom_database import files_from_dicom_database
from .export_checks import (  # noqa: F401  (part of this module's interface)
    FORMATS,
    SEGMENT_NAMES,
    ExportError,
    check_dicom_seg_export,
    check_formats,
    default_formats,
    require_highdicom,
    result_node,
    safe_stem,
    segment_ids,
)
from .results import SegmentAndExplainResult

VOLUME_SUFFIXES = {"nifti": ".nii.gz", "nrrd": ".nrrd"}

Progress = Callable[[float, str], None]


# Volumes ------------------------------------------------------------------------------------
def volume_node_ids(result: SegmentAndExplainResult, stem: str) -> dict[str, str]:
    """File name without suffix → node ID of every volume of a result (as write_outputs)."""
    names = {f"{stem}_label": result.labelmapNodeID}
    for method, per_class in result.explanationNodeIDs.items():
        for class_name, node_id in per_class.items():
            names[f"{stem}_{FILE_SLUGS[method]}_{class_name}"] = node_id
    if result.uncertaintyNodeID:
        names[f"{stem}_uncertainty"] = result.uncertaintyNodeID
    return names


def export_volumes(scene: Any, nodes: dict[str, Any], out_dir: Path, suffix: str) -> list[Path]:
    """Write each volume node (file name without suffix → node) with its own geometry."""
    paths = []
    for name, node in nodes.items():
        path = out_dir / f"{name}{suffix}"
        write_volume(path, *mrml.read_volume_node(node))
        paths.append(path)
    return paths


# Surfaces -----------------------------------------------------------------------------------
def _has_surface(segmentation_node: Any, segment_id: str) -> bool:
    import slicer
    import vtk

    surface = vtk.vtkPolyData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    return bool(
        logic.GetSegmentClosedSurfaceRepresentation(segmentation_node, segment_id, surface)
        and surface.GetNumberOfPoints() > 0
    )


def _export_surface(
    segmentation_node: Any, segment_id: str, file_format: str, folder: Path
) -> list[Path]:
    """One segment's surface by Slicer's exporter into an empty private folder, in LPS."""
    import slicer
    import vtk

    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.ExportSegmentsClosedSurfaceRepresentationToFiles(
        str(folder), segmentation_node, ids, file_format.upper(), True, 1.0, False
    ):
        raise RuntimeError(f"Exporting the {file_format.upper()} surface failed.")
    return sorted(folder.iterdir())


def export_surfaces(
    segmentation_node: Any, out_dir: Path, stem: str, file_format: str
) -> list[Path]:
    """``STEM_<segment>.stl`` (or ``.obj`` with its ``.mtl``) for each non-empty segment."""
    paths = []
    for name, segment_id in segment_ids(segmentation_node).items():
        if not _has_surface(segmentation_node, segment_id):
            continue
        target = out_dir / f"{stem}_{name}.{file_format}"
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{target.name}.") as folder:
            written = _export_surface(segmentation_node, segment_id, file_format, Path(folder))
            surface = next((p for p in written if p.suffix.lower() == f".{file_format}"), None)
            if surface is None:
                raise RuntimeError(f"Slicer's exporter wrote no {file_format.upper()} file.")
            files = [target]
            material = next((p for p in written if p.suffix.lower() == ".mtl"), None)
            if material is not None:  # point the OBJ at the renamed material file
                _rename_material(surface, material.name, f"{target.stem}.mtl")
                os.replace(material, target.with_suffix(".mtl"))
                files.append(target.with_suffix(".mtl"))
            os.replace(surface, target)
        paths += files
    return paths


def _rename_material(obj_path: Path, old: str, new: str) -> None:
    lines = obj_path.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.startswith("mtllib") and line.split(maxsplit=1)[1].strip() == old:
            lines[index] = f"mtllib {new}\n"
            break
    # still in the private folder: the rename is atomic
    obj_path.write_text("".join(lines), encoding="utf-8")


# DICOM SEG ----------------------------------------------------------------------------------
def segment_masks(
    scene: Any, segmentation_node: Any, reference_node: Any
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Boolean (K, J, I) mask of each segment on the reference volume's grid, and its
    IJK-to-RAS matrix; from the segmentation node, so edits made in Slicer are included."""
    import slicer

    logic = slicer.vtkSlicerSegmentationsModuleLogic
    masks = {}
    ijk_to_ras = mrml.ijk_to_ras_array(reference_node)
    for name, segment_id in segment_ids(segmentation_node).items():
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            if not logic.ExportSegmentsToLabelmapNode(
                segmentation_node, [segment_id], labelmap, reference_node
            ):
                raise RuntimeError(f"Exporting segment {name} to a labelmap failed.")
            array, matrix = mrml.read_volume_node(labelmap)
            if not np.allclose(matrix, ijk_to_ras, atol=1e-6):
                raise RuntimeError(f"Segment {name} came out on another grid than the CT's.")
            masks[name] = array != 0
        finally:
            scene.RemoveNode(labelmap)
    return masks, ijk_to_ras


def prepare_dicom_seg(
    scene: Any,
    input_node: Any,
    result: SegmentAndExplainResult,
    dicom_series_dir: str | Path | None = None,
    series_uid: str | None = None,
) -> Callable[[Path], None]:
    """Check that a DICOM SEG can be made and build it; returns the function that writes it.

    Source images: the series of ``dicom_series_dir`` (``series_uid``, else the one
    :func:`dicom_series.choose_series` picks, else one that fits the CT's grid; see
    :func:`dicom_seg_sources.seg_sources`), or the files of the input node in Slicer's DICOM
    database (``DICOM.instanceUIDs``). Inside Slicer with QuantitativeReporting and no folder
    given, its exporter is used; otherwise highdicom. Raises ``DicomSegError`` when no source
    series is known (the CT did not come from DICOM) or it does not match the CT.
    """
    from ..io import dicom_seg

    segmentation_node = result_node(scene, result.segmentationNodeID, "segmentation")
    algorithm = f"LiverXAI {result.modelName}".strip()
    description = f"LiverXAI liver and tumour ({result.modelName})"
    name = input_node.GetName()
    if dicom_series_dir is not None:
        return _seg_from_folder(
            scene,
            segmentation_node,
            input_node,
            dicom_series_dir,
            series_uid,
            algorithm,
            description,
        )
    files = files_from_dicom_database(input_node)
    if files is None:
        raise DicomSegError(
            f"{name} did not come from DICOM (no source DICOM series is known), and a DICOM "
            "SEG must reference the source CT images: give the CT's DICOM series folder, "
            "or load the CT through Slicer's DICOM module."
        )
    exporter = dicom_seg.slicer_exporter_class()
    if exporter is not None:
        segment_ids(segmentation_node)
        return lambda path: dicom_seg.export_with_slicer(
            exporter, segmentation_node, path, algorithm, description
        )
    return _seg_from_database(scene, segmentation_node, input_node, files, algorithm, description)


def _seg_from_folder(
    scene: Any,
    segmentation_node: Any,
    input_node: Any,
    folder: str | Path,
    series_uid: str | None,
    algorithm: str,
    description: str,
) -> Callable[[Path], None]:
    """The SEG writer (highdicom) for the source series in the DICOM ``folder`` (``series_uid``
    or the one :func:`dicom_seg_sources.series_segmentation` chooses)."""
    from ..io import dicom_seg
    from ..io.dicom_seg_sources import series_segmentation

    require_highdicom()
    masks, ijk_to_ras = segment_masks(scene, segmentation_node, input_node)
    dataset, _ = series_segmentation(
        folder,
        masks,
        ijk_to_ras,
        algorithm,
        _version(),
        description,
        series_uid,
        input_node.GetName(),
    )
    return lambda path: dicom_seg.write_dataset(dataset, path)


def _seg_from_database(
    scene: Any,
    segmentation_node: Any,
    input_node: Any,
    files: Any,
    algorithm: str,
    description: str,
) -> Callable[[Path], None]:
    """The SEG writer (highdicom) for the input's ``files`` in Slicer's DICOM database: the
    largest of their series that fits the CT's grid is the source."""
    from ..io import dicom_seg

    where = "Slicer's DICOM database"
    require_highdicom()
    series = dicom_seg.read_headers(files)
    if not series:
        raise DicomSegError(f"No DICOM images found in {where}.")
    masks, ijk_to_ras = segment_masks(scene, segmentation_node, input_node)
    shape = next(iter(masks.values())).shape
    errors = []
    for datasets in sorted(series.values(), key=len, reverse=True):
        try:
            slices = dicom_seg.source_slices(datasets, ijk_to_ras, shape)
        except DicomSegError as error:
            errors.append(str(error))
            continue
        dataset = dicom_seg.build_segmentation(slices, masks, algorithm, _version(), description)
        return lambda path: dicom_seg.write_dataset(dataset, path)
    if len(errors) > 1:
        errors[0] = f"none of its {len(errors)} series fits; the largest: {errors[0]}"
    name = input_node.GetName()
    raise DicomSegError(f"The DICOM series in {where} is not the source of {name}: {errors[0]}")


def _version() -> str:
    from .. import __version__

    return __version__


# One action ---------------------------------------------------------------------------------
def export_results(
    scene: Any,
    input_node: Any | None,
    result: SegmentAndExplainResult,
    out_dir: str | Path,
    formats: Sequence[str] | str = ("nifti", "stl"),
    stem: str | None = None,
    dicom_series_dir: str | Path | None = None,
    progress: Progress | None = None,
    dicom_series_uid: str | None = None,
) -> dict[str, list[Path]]:
    """Write a result in the chosen ``formats`` (see :data:`FORMATS`) into ``out_dir``.

    ``input_node`` is the CT the result was computed from (None: the segmentation's reference
    volume); ``stem`` starts every file name (default: the input's name, made file-safe).
    ``dicom_series_uid`` names the series of ``dicom_series_dir`` the CT was read from (as
    :func:`volume_io.read_volume_and_source` reports it), so that the SEG references exactly
    the files that were read.
    Returns the written paths by format. Everything that can be checked is checked before the
    first file is written: unknown formats (``ExportError``), missing nodes, and for
    ``dicom-seg`` the source series (``DicomSegError``).
    """
    chosen = check_formats(formats)
    report = progress or (lambda _fraction, _message: None)
    segmentation_node = result_node(scene, result.segmentationNodeID, "segmentation")
    if input_node is None:
        input_node = segmentation_node.GetNodeReference(
            segmentation_node.GetReferenceImageGeometryReferenceRole()
        )
        if input_node is None:
            raise ExportError("The input CT of this result is not known; pass its volume node.")
    stem = safe_stem(stem or input_node.GetName())
    volumes = {
        name: result_node(scene, node_id, name.removeprefix(f"{stem}_") + " volume")
        for name, node_id in volume_node_ids(result, stem).items()
    }
    if "stl" in chosen or "obj" in chosen:
        segment_ids(segmentation_node)
    write_seg = None
    if "dicom-seg" in chosen:
        report(0.0, "Preparing the DICOM SEG")
        write_seg = prepare_dicom_seg(scene, input_node, result, dicom_series_dir, dicom_series_uid)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for step, file_format in enumerate(chosen):
        report(step / len(chosen), f"Writing {file_format}")
        if file_format in VOLUME_SUFFIXES:
            written[file_format] = export_volumes(
                scene, volumes, out_dir, VOLUME_SUFFIXES[file_format]
            )
        elif file_format in ("stl", "obj"):
            written[file_format] = export_surfaces(segmentation_node, out_dir, stem, file_format)
        else:
            path = out_dir / f"{stem}_seg.dcm"
            write_seg(path)
            written[file_format] = [path]
    report(1.0, "Exported")
    return written
