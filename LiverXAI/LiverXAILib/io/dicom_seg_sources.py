"""The source images of a DICOM SEG: the series chosen as :mod:`dicom_series` reads it, mapped
onto the segmentation's grid, and copies of their headers repaired for the SEG.

Real clinical headers often lack what the SEG must carry; :func:`repair_sources` fixes copies
of them (never the files): an empty or invalid Specific Character Set (the SEG is written in
UTF-8), a missing Frame of Reference UID or Study Instance UID (a fixed one derived from the
series UID, the same on every export), a missing SOP Class UID (from the file meta), missing
or invalid patient and study attributes (left empty), a missing Slice Thickness (the slice
spacing); Spacing Between Slices is recomputed from the slice positions. Each repair is
returned as a sentence (and logged when the SEG is built).
"""

from __future__ import annotations

import copy
import logging
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .dicom_seg import DicomSegError, SourceSlice, build_segmentation, source_slices
from .dicom_series import SeriesInfo, choose_series, find_series, list_dicom_series, read_header
from .volumes import LPS_TO_RAS

log = logging.getLogger(__name__)


# The series and its slices --------------------------------------------------------------------
def seg_sources(
    folder: str | Path,
    ijk_to_ras: np.ndarray,
    shape: tuple[int, int, int],
    series_uid: str | None = None,
    name: str = "the segmentation",
) -> tuple[SeriesInfo, list[SourceSlice]]:
    """The series of ``folder`` a SEG of a (K, J, I) volume with ``ijk_to_ras`` references, and
    its slices. With ``series_uid`` that series only (``InputError`` if it is not usable);
    otherwise the series :func:`choose_series` reads, then any other usable series that fits
    the grid (a folder holding a whole study). Only the chosen files of a series are used:
    its localizers never become frames. ``DicomSegError`` when no series fits."""
    folder = Path(folder)
    series = list_dicom_series(folder)
    if series_uid:
        candidates = [choose_series(series, folder, series_uid)]
    else:
        candidates = sorted((s for s in series if s.usable), key=lambda s: -s.images)
        try:
            chosen = choose_series(series, folder)
        except InputError:  # several plausible series: the grid decides
            chosen = None
        if chosen is not None:
            candidates = [chosen, *(s for s in candidates if s.uid != chosen.uid)]
    if not candidates:
        problems = "; ".join(f"{s.describe()}: {s.problem}" for s in series)
        raise DicomSegError(
            f"No DICOM images found in {folder}"
            + (f" that make a volume ({problems})." if problems else ".")
        )
    errors = []
    for info in candidates:
        datasets = [read_header(path) for path in info.files]
        try:
            return info, source_slices(datasets, ijk_to_ras, shape)
        except DicomSegError as error:
            errors.append(str(error))
    if len(errors) > 1:
        errors[0] = f"none of its {len(errors)} series fits; the first: {errors[0]}"
    raise DicomSegError(f"The DICOM series in {folder} is not the source of {name}: {errors[0]}")


def series_segmentation(
    folder: str | Path,
    masks: dict[str, np.ndarray],
    ijk_to_ras: np.ndarray,
    algorithm_name: str,
    version: str,
    series_description: str = "LiverXAI segmentation",
    series_uid: str | None = None,
    name: str = "the segmentation",
) -> tuple[Any, SeriesInfo]:
    """The DICOM SEG dataset of ``masks`` (segment name → (K, J, I) boolean array on the grid
    ``ijk_to_ras``) referencing the series of ``folder`` (see :func:`seg_sources`), and that
    series. ``DicomSegError`` names the series when highdicom refuses its headers."""
    shape = next(iter(masks.values())).shape
    info, slices = seg_sources(folder, ijk_to_ras, shape, series_uid, name)
    try:
        dataset = build_segmentation(slices, masks, algorithm_name, version, series_description)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise DicomSegError(f"A DICOM SEG cannot reference {info.describe()}: {error}") from error
    return dataset, info


def check_series(folder: str | Path, series_uid: str | None = None) -> tuple[SeriesInfo, list[str]]:
    """Whether a SEG can reference the series of ``folder`` that the CT reader would read:
    the series (``InputError`` if none is usable or the choice is ambiguous) and the repairs
    its SEG will carry. A two-frame SEG is built (not written) to let highdicom check the
    headers; ``DicomSegError`` if it refuses them."""
    info, _ = find_series(folder, series_uid)
    datasets = [read_header(p) for p in info.files]
    shape = (info.images, info.rows, info.columns)
    slices = source_slices(datasets, LPS_TO_RAS @ info.ijk_to_lps(), shape)
    ends = [slices[0], slices[-1]]
    masks = {name: np.zeros(shape, dtype=bool) for name in ("liver", "tumor")}
    for item in ends:
        for mask in masks.values():
            mask[item.k.flat[0], item.j.flat[0], item.i.flat[0]] = True
    try:
        build_segmentation(ends, masks, "LiverXAI", "check", "check", log_repairs=False)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise DicomSegError(f"A DICOM SEG cannot reference {info.describe()}: {error}") from error
    return info, repair_sources(datasets)[1]


# Repairing copies of the source headers ---------------------------------------------------
def derived_uid(kind: str, series_uid: str) -> str:
    """A UID (2.25 form) that is the same every time for ``kind`` and the series UID."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'LiverXAI {kind} {series_uid}').int}"


def _character_set(dataset: Any) -> tuple[str | list[str] | None, str | None]:
    """The Specific Character Set for the SEG, and a note when the source's is unusable."""
    from highdicom.enum import SpecificCharacterSetValues

    if "SpecificCharacterSet" not in dataset:
        return None, None
    value = dataset.SpecificCharacterSet
    terms = [value] if isinstance(value, str) else list(value or [])
    valid = {v.value for v in SpecificCharacterSetValues}
    if terms and all(isinstance(t, str) and t.strip() in valid for t in terms):
        terms = [t.strip() for t in terms]
        return (terms[0] if len(terms) == 1 else terms), None
    return "ISO_IR 192", (
        f"the source's Specific Character Set {value!r} is empty or invalid: the SEG is "
        "written in UTF-8 (ISO_IR 192)"
    )


def _valid(kind: Any, value: Any) -> bool:
    try:
        with warnings.catch_warnings():  # pydicom warns before it raises
            warnings.simplefilter("ignore")
            kind(value)
    except (TypeError, ValueError):
        return False
    return True


def repair_sources(datasets: Sequence[Any]) -> tuple[list[Any], list[str], Any]:
    """Copies of the source headers that highdicom accepts, the repairs made (sentences), and
    the Specific Character Set for the SEG. The datasets themselves are not changed."""
    from highdicom.enum import PatientSexValues
    from pydicom.valuerep import DA, TM

    first = datasets[0]
    series_uid = str(first.SeriesInstanceUID)
    character_set, note = _character_set(first)
    notes = [note] if note else []
    copies = [copy.deepcopy(d) for d in datasets]
    if not first.get("FrameOfReferenceUID"):
        uid = derived_uid("FrameOfReferenceUID", series_uid)
        notes.append(
            f"the source images have no Frame of Reference UID: the SEG uses {uid}, derived "
            "from the series UID (viewers that match it to the images will not find it there)"
        )
        for dataset in copies:
            dataset.FrameOfReferenceUID = uid
    media_class = first.get("file_meta", {}).get("MediaStorageSOPClassUID")
    if "SOPClassUID" not in first and media_class:
        notes.append(f"the source images have no SOP Class UID: {media_class} from their file meta")
        for dataset in copies:
            dataset.SOPClassUID = media_class
    if not first.get("StudyInstanceUID"):
        uid = derived_uid("StudyInstanceUID", series_uid)
        notes.append(f"the source images have no Study Instance UID: the SEG uses {uid}")
        for dataset in copies:
            dataset.StudyInstanceUID = uid
    empty = []
    checks = {
        "PatientBirthDate": DA,
        "StudyDate": DA,
        "StudyTime": TM,
        "PatientSex": PatientSexValues,
    }
    for keyword in ("PatientID", "PatientName", "AccessionNumber", "StudyID", *checks):
        value = first.get(keyword)
        bad = value not in (None, "") and keyword in checks and not _valid(checks[keyword], value)
        if keyword not in first or bad:
            empty.append(f"{keyword} ({'invalid: ' + repr(str(value)) if bad else 'missing'})")
            for dataset in copies:
                setattr(dataset, keyword, "")
    if empty:
        notes.append("the SEG leaves empty what the source images lack: " + ", ".join(empty))
    normal = np.cross(*np.array(first.ImageOrientationPatient, dtype=float).reshape(2, 3))
    distances = np.sort([np.dot(d.ImagePositionPatient, normal) for d in datasets])
    spacing = float(np.mean(np.diff(distances))) if len(distances) > 1 else None
    if first.get("SliceThickness") in (None, "") and spacing:
        notes.append(f"the source images have no Slice Thickness: the SEG uses {spacing:g} mm")
    for dataset in copies:
        if "SpacingBetweenSlices" in dataset:  # recomputed from the positions by highdicom
            del dataset.SpacingBetweenSlices
        if dataset.get("SliceThickness") in (None, "") and spacing:
            dataset.SliceThickness = f"{spacing:.6g}"
    return copies, notes, character_set
