"""DICOM SEG export of the liver and tumour segments, referencing the source CT series.

Headless (and in Slicer without QuantitativeReporting) the object is built with ``highdicom``:
one BINARY segment per structure with its SNOMED CT codes (:mod:`terminology`), algorithm
type AUTOMATIC, and every frame tied to the source CT instance it lies on. The masks are
matched to the source slices by geometry (position, orientation and spacing of each file), so
the series may be stored in any slice order; a segmentation that is not on the source grid is
refused. In Slicer with QuantitativeReporting, its own exporter (dcmqi) is used instead.

The source images are the files that :mod:`dicom_series` chose for the CT volume (localizers
and other misfits left out); what their headers lack is repaired in copies
(:mod:`dicom_seg_sources`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..slicer.terminology import SEGMENT_TERMS, Code
from .atomic import atomic_path

log = logging.getLogger(__name__)

GEOMETRY_TOLERANCE = 0.1  # voxels: how far a source pixel centre may be from a voxel centre
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
GEOMETRY_KEYWORDS = (  # what a source image needs for its pixels to be placed
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
)


class DicomSegError(ValueError):
    """A DICOM SEG cannot be made: no source series, or the masks do not lie on its slices."""


@dataclass(frozen=True)
class SourceSlice:
    """One source CT instance (header only) and the voxels of the mask volume it shows."""

    dataset: Any  # pydicom Dataset without pixel data
    k: np.ndarray  # voxel indices into the (K, J, I) masks, broadcasting to (rows, columns)
    j: np.ndarray
    i: np.ndarray


# Finding the source series ----------------------------------------------------------------
def dicom_files(folder: str | Path) -> list[Path]:
    """Every file under ``folder`` (recursively), sorted; which are DICOM is decided on reading."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomSegError(f"The DICOM series folder {folder} does not exist.")
    return sorted(p for p in folder.rglob("*") if p.is_file())


def read_headers(files: Sequence[Path]) -> dict[str, list[Any]]:
    """Headers (no pixel data) of the images among ``files`` that can be placed in space
    (position, orientation, spacing), by series UID; other files are skipped."""
    import pydicom

    series: dict[str, list[Any]] = {}
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM, or unreadable: not part of a source series
            continue
        if all(keyword in dataset for keyword in GEOMETRY_KEYWORDS):
            series.setdefault(str(dataset.SeriesInstanceUID), []).append(dataset)
    return series


# Geometry: which voxels each source slice shows -------------------------------------------
def _on_grid(values: np.ndarray, what: str, name: str, reach: int = 1) -> np.ndarray:
    """``values`` rounded to whole voxels; ``reach`` pixels of a step must stay on the grid."""
    rounded = np.rint(values)
    offset = float(np.max(np.abs(values - rounded))) * reach
    if offset > GEOMETRY_TOLERANCE:
        raise DicomSegError(
            f"The segmentation's voxels do not match the pixels of the DICOM series ({what} "
            f"of {name} is {offset:.2f} voxels off the grid); the DICOM SEG needs the "
            "segmentation on the source CT's own grid (was the CT resampled or cropped?)."
        )
    return rounded.astype(np.intp)


def source_slices(
    datasets: Sequence[Any], ijk_to_ras: np.ndarray, shape: tuple[int, int, int]
) -> list[SourceSlice]:
    """Map each source instance to the voxels of a (K, J, I) volume with ``ijk_to_ras`` that
    its pixels lie on, sorted along the slice axis. Raises ``DicomSegError`` unless the
    series covers the volume exactly, one voxel per pixel."""
    ras_to_ijk = np.linalg.inv(np.asarray(ijk_to_ras, dtype=float))
    dimensions = shape[::-1]  # along I, J, K
    slices: dict[tuple[int, int], tuple[str, SourceSlice]] = {}  # (normal axis, plane) →
    for dataset in datasets:
        name = f"instance {dataset.get('InstanceNumber', '?')} ({dataset.SOPInstanceUID})"
        key, source = _place_instance(dataset, name, ras_to_ijk, dimensions)
        if key in slices:
            raise DicomSegError(f"{name} and {slices[key][0]} lie on the same slice.")
        slices[key] = (name, source)
    normals = {normal for normal, _ in slices}
    if len(normals) != 1 or len(slices) != dimensions[normals.pop()]:
        raise DicomSegError(
            f"The DICOM series' {len(slices)} slices do not cover the segmentation's volume "
            f"({shape[0]} slices of {shape[1]}×{shape[2]}); the DICOM SEG needs the "
            "segmentation of this very series."
        )
    return [slices[key][1] for key in sorted(slices)]


def _place_instance(
    dataset: Any, name: str, ras_to_ijk: np.ndarray, dimensions: tuple[int, int, int]
) -> tuple[tuple[int, int], SourceSlice]:
    """The voxels one single-frame instance's pixels lie on, and its (normal axis, plane).

    Raises ``DicomSegError`` when its pixels are off the grid, do not run along the volume's
    axes or reach outside it (``dimensions``: along I, J, K)."""
    rotation, translation = ras_to_ijk[:3, :3], ras_to_ijk[:3, 3]
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomSegError(f"{name} is multi-frame; single-frame CT slices are needed.")
    orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    position = np.array(dataset.ImagePositionPatient, dtype=float) * LPS_TO_RAS
    size = (int(dataset.Rows), int(dataset.Columns))
    origin = _on_grid(rotation @ position + translation, "the first pixel", name)
    column_step = _on_grid(
        rotation @ (orientation[:3] * LPS_TO_RAS * column_spacing),
        "the last column",
        name,
        size[1],
    )
    row_step = _on_grid(
        rotation @ (orientation[3:] * LPS_TO_RAS * row_spacing),
        "the last row",
        name,
        size[0] - 1,
    )
    axes = {int(np.argmax(np.abs(step))) for step in (row_step, column_step)}
    if np.abs(row_step).sum() != 1 or np.abs(column_step).sum() != 1 or len(axes) != 2:
        raise DicomSegError(f"The pixels of {name} do not run along the segmentation's axes.")
    index = _pixel_voxels(origin, row_step, column_step, size)
    if any(v.min() < 0 or v.max() >= dimensions[a] for a, v in enumerate(index)):
        raise DicomSegError(
            f"{name} reaches outside the segmentation's volume; the DICOM SEG needs the "
            "segmentation of this very series."
        )
    normal = 3 - sum(axes)
    return (normal, int(origin[normal])), SourceSlice(dataset, index[2], index[1], index[0])


def _pixel_voxels(
    origin: np.ndarray, row_step: np.ndarray, column_step: np.ndarray, size: tuple[int, int]
) -> list[np.ndarray]:
    """Per I, J, K: the voxel index of each pixel, shaped (rows, 1), (1, columns) or (1, 1),
    never full size."""
    rows, columns = np.ogrid[: size[0], : size[1]]
    index = []
    for axis in range(3):
        values = np.full((1, 1), origin[axis])
        if row_step[axis]:
            values = values + rows * row_step[axis]
        if column_step[axis]:
            values = values + columns * column_step[axis]
        index.append(values)
    return index


# Building and writing the DICOM SEG with highdicom ---------------------------------------
def _coded(code: Code) -> Any:
    from pydicom.sr.coding import Code as DicomCode

    return DicomCode(code.value, code.scheme, code.meaning)


def _display_color(rgb: tuple[float, float, float]) -> Any:
    from highdicom.color import CIELabColor

    return CIELabColor.from_rgb(*(round(255 * c) for c in rgb))


def segment_descriptions(names: Sequence[str], algorithm_name: str, version: str) -> list[Any]:
    """One BINARY, AUTOMATIC segment per name (``liver``, ``tumor``) with its SNOMED CT codes."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from ..constants import CLASS_COLORS

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=version
    )
    descriptions = []
    for number, name in enumerate(names, start=1):
        term = SEGMENT_TERMS[name]
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=_coded(term.category),
                segmented_property_type=_coded(term.type),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                anatomic_regions=[_coded(term.anatomic_region)] if term.anatomic_region else None,
                display_color=_display_color(CLASS_COLORS[name]),
            )
        )
    return descriptions


def build_segmentation(
    slices: Sequence[SourceSlice],
    masks: dict[str, np.ndarray],
    algorithm_name: str,
    version: str,
    series_description: str = "LiverXAI segmentation",
    log_repairs: bool = True,
) -> Any:
    """The DICOM SEG dataset: one frame per source slice and non-empty segment, each
    referencing its source instance. ``masks`` maps segment name → (K, J, I) boolean array.
    What the source headers lack is repaired in copies (logged as warnings unless
    ``log_repairs`` is false), see :func:`dicom_seg_sources.repair_sources`."""
    import highdicom as hd

    from .dicom_seg_sources import repair_sources

    names = list(masks)
    frames = np.stack(
        [np.stack([masks[n][s.k, s.j, s.i] for n in names], axis=-1) for s in slices]
    ).astype(np.uint8)
    sources, notes, character_set = repair_sources([s.dataset for s in slices])
    for note in notes if log_repairs else ():
        log.warning("DICOM SEG of series %s: %s", sources[0].SeriesInstanceUID, note)
    series_number = int(sources[0].get("SeriesNumber", 0) or 0) + 100
    with warnings.catch_warnings():  # the source's patient name is copied as it is
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(names, algorithm_name, version),
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="LiverXAI",
            manufacturer_model_name=algorithm_name[:64],
            software_versions=version,
            device_serial_number="0",
            content_description=series_description[:64],
            content_label="LIVERXAI",
            series_description=series_description[:64],
            specific_character_set=character_set,
        )


def write_dataset(dataset: Any, path: Path) -> None:
    """Save a DICOM dataset atomically (temporary file, then rename)."""
    with atomic_path(path, suffix=".dcm") as temporary:
        dataset.save_as(temporary, enforce_file_format=True)


# Inside Slicer: QuantitativeReporting's exporter (dcmqi) -----------------------------------
# Not reachable headless, so not covered by the tests; kept to this small section.
def slicer_exporter_class() -> Any | None:
    """QuantitativeReporting's ``DICOMSegmentationExporter`` inside Slicer, else None."""
    try:
        from DICOMSegmentationPlugin import DICOMSegmentationExporter
    except (ImportError, AttributeError):
        return None
    return DICOMSegmentationExporter


def export_with_slicer(
    exporter_class: Any,
    segmentation_node: Any,
    path: Path,
    algorithm_name: str,
    series_description: str,
) -> None:
    """Write ``path`` with Slicer's DICOM SEG exporter, which reads the source files of the
    segmentation's reference volume from the DICOM database. Tags the segments with their
    terminology and algorithm (AUTOMATIC, ``algorithm_name``) first; empty segments are left
    out, as that exporter cannot write them."""
    from ..slicer.terminology import apply_terminology

    apply_terminology(segmentation_node)
    segmentation = segmentation_node.GetSegmentation()
    for name in SEGMENT_TERMS:
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        segment.SetTag("DICOM.SegmentAlgorithmType", "AUTOMATIC")
        segment.SetTag("DICOM.SegmentAlgorithmName", algorithm_name)
    exporter = exporter_class(segmentation_node, "LiverXAI")
    try:
        with atomic_path(path, suffix=".dcm") as temporary:
            metadata = {"SeriesDescription": series_description, "ContentCreatorName": "LiverXAI"}
            try:
                exporter.export(str(temporary.parent), temporary.name, metadata, skipEmpty=True)
            except ValueError as error:  # e.g. every segment empty
                raise DicomSegError(f"Slicer's DICOM SEG exporter refused: {error}") from error
            if temporary.stat().st_size == 0:
                raise RuntimeError("Slicer's DICOM SEG exporter wrote nothing.")
    finally:
        exporter.cleanup()
