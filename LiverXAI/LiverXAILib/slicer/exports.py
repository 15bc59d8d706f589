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
written.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.dicom_seg import DicomSegError
from ..io.result_files import FILE_SLUGS
from ..io.volumes import write_volume
from . import scene as mrml
from .results import SegmentAndExplainResult

FORMATS: tuple[str, ...] = ("nifti", "nrrd", "stl", "obj", "dicom-seg")
VOLUME_SUFFIXES = {"nifti": ".nii.gz", "nrrd": ".nrrd"}
SEGMENT_NAMES: tuple[str, ...] = ("liver", "tumor")

Progress = Callable[[float, str], None]


class ExportError(ValueError):
    """Results cannot be exported as asked: unknown format, or a node of the result is gone."""


def check_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    """The formats asked for, lower-cased and without repeats; ``ExportError`` names unknown
    ones and lists the choices."""
    if isinstance(formats, str):
        formats = [formats]
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise ExportError(f"Unknown export format {unknown}: choose from {list(FORMATS)}.")
    if not chosen:
        raise ExportError(f"No export format chosen: choose from {list(FORMATS)}.")
    return chosen


def safe_stem(name: str) -> str:
    """A file-name stem from a node name: letters, digits, ``.``, ``_`` and ``-`` only
    (spaces would break the material reference of OBJ files)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "liverxai"


def default_formats(input_node: Any, dicom_series_dir: str | Path | None = None) -> tuple[str, ...]:
    """Every format, DICOM SEG only when the source DICOM series is known."""
    from ..io.dicom_seg import files_from_dicom_database

    known = dicom_series_dir is not None
    if not known:
        try:
            known = files_from_dicom_database(input_node) is not None
        except DicomSegError:
            known = False
    return FORMATS if known else tuple(f for f in FORMATS if f != "dicom-seg")


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


def _node(scene: Any, node_id: str, what: str) -> Any:
    node = scene.GetNodeByID(node_id) if node_id else None
    if node is None:
        raise ExportError(f"The {what} of this result ({node_id or 'none'}) is not in the scene.")
    return node


def export_volumes(scene: Any, nodes: dict[str, Any], out_dir: Path, suffix: str) -> list[Path]:
    """Write each volume node (file name without suffix → node) with its own geometry."""
    paths = []
    for name, node in nodes.items():
        path = out_dir / f"{name}{suffix}"
        write_volume(path, *mrml.read_volume_node(node))
        paths.append(path)
    return paths


# Surfaces -----------------------------------------------------------------------------------
def segment_ids(segmentation_node: Any) -> dict[str, str]:
    """Segment ID of the liver and tumour segments; ``ExportError`` if one is missing."""
    segmentation = segmentation_node.GetSegmentation()
    ids = {name: segmentation.GetSegmentIdBySegmentName(name) for name in SEGMENT_NAMES}
    missing = [name for name, segment_id in ids.items() if not segment_id]
    if missing:
        raise ExportError(
            f"{segmentation_node.GetName()} has no segment named {missing} (renamed or deleted?)."
        )
    return ids


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


def _require_highdicom() -> None:
    try:
        import highdicom  # noqa: F401
    except ImportError as error:
        raise DicomSegError(
            "DICOM SEG export needs the QuantitativeReporting extension (in Slicer) or the "
            "highdicom package (slicer.util.pip_install('highdicom') or pip install highdicom)."
        ) from error


def check_dicom_seg_export(input_path: str | Path, series_uid: str | None = None) -> list[str]:
    """Before a long run: whether a DICOM SEG of ``input_path`` can be made (a folder holding
    a DICOM series whose headers a SEG can reference). Returns the repairs the SEG will carry
    (sentences, see :mod:`dicom_seg_sources`). Raises ``ExportError`` for an input that is not
    a DICOM folder, ``InputError`` for a folder without a usable or unambiguous series (pick
    one with ``series_uid``), ``DicomSegError`` when the SEG cannot be made. Reads headers only
    and builds a two-frame SEG: a second or so."""
    from ..io.dicom_seg_sources import check_series

    path = Path(input_path)
    needs = "--export dicom-seg needs a DICOM series folder as input"
    if not path.exists():
        raise ExportError(f"{needs}; {path} does not exist.")
    if not path.is_dir():
        name = path.name.lower()
        kind = (
            "a NIfTI file"
            if name.endswith((".nii", ".nii.gz"))
            else "an NRRD file"
            if name.endswith((".nrrd", ".nhdr"))
            else "a file"
        )
        raise ExportError(f"{needs}; {path.name} is {kind}.")
    _require_highdicom()
    return check_series(path, series_uid)[1]


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

    segmentation_node = _node(scene, result.segmentationNodeID, "segmentation")
    algorithm = f"LiverXAI {result.modelName}".strip()
    description = f"LiverXAI liver and tumour ({result.modelName})"
    name = input_node.GetName()
    if dicom_series_dir is not None:
        from ..io.dicom_seg_sources import series_segmentation

        _require_highdicom()
        masks, ijk_to_ras = segment_masks(scene, segmentation_node, input_node)
        dataset, _ = series_segmentation(
            dicom_series_dir,
            masks,
            ijk_to_ras,
            algorithm,
            _version(),
            description,
            series_uid,
            name,
        )
        return lambda path: dicom_seg.write_dataset(dataset, path)
    files = dicom_seg.files_from_dicom_database(input_node)
    where = "Slicer's DICOM database"
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
    _require_highdicom()
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
    segmentation_node = _node(scene, result.segmentationNodeID, "segmentation")
    if input_node is None:
        input_node = segmentation_node.GetNodeReference(
            segmentation_node.GetReferenceImageGeometryReferenceRole()
        )
        if input_node is None:
            raise ExportError("The input CT of this result is not known; pass its volume node.")
    stem = safe_stem(stem or input_node.GetName())
    volumes = {
        name: _node(scene, node_id, name.removeprefix(f"{stem}_") + " volume")
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
