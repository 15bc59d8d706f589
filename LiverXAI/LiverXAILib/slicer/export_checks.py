"""What an export of a result may ask for, and the checks made before it writes anything.

The export formats (:data:`FORMATS`, checked by :func:`check_formats`; :func:`default_formats`
offers DICOM SEG only when the source series is known), the file-name stem
(:func:`safe_stem`), the result's nodes and segments (:func:`result_node`,
:func:`segment_ids`), and whether a DICOM SEG of a command-line input can be made
(:func:`check_dicom_seg_export`, before the long run). The export itself is :mod:`exports`,
which re-exports these names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io.dicom_seg import DicomSegError

FORMATS: tuple[str, ...] = ("nifti", "nrrd", "stl", "obj", "dicom-seg")
SEGMENT_NAMES: tuple[str, ...] = ("liver", "tumor")


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
    from .dicom_database import files_from_dicom_database

    known = dicom_series_dir is not None
    if not known:
        try:
            known = files_from_dicom_database(input_node) is not None
        except DicomSegError:
            known = False
    return FORMATS if known else tuple(f for f in FORMATS if f != "dicom-seg")


def result_node(scene: Any, node_id: str, what: str) -> Any:
    """The node ``node_id`` of a result; ``ExportError`` naming ``what`` if it is gone."""
    node = scene.GetNodeByID(node_id) if node_id else None
    if node is None:
        raise ExportError(f"The {what} of this result ({node_id or 'none'}) is not in the scene.")
    return node


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


def require_highdicom() -> None:
    """``DicomSegError`` saying how to install highdicom when it is missing."""
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
    require_highdicom()
    return check_series(path, series_uid)[1]
