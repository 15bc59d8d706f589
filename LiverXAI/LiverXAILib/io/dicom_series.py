"""Finding and reading the CT series of a DICOM folder the way Slicer's DICOM module does.

Headers only (pydicom, no pixel data) decide which files make the volume:

* files are grouped by Series Instance UID (the folder is searched recursively; hidden files
  and files that are not DICOM are ignored);
* within a series, images that cannot be stacked are left out, each with its reason:
  non-image objects, multi-frame images, localizers (Image Type LOCALIZER or SCOUT), images
  without position, orientation or pixel spacing (screenshots, secondary captures), colour
  images, further copies of the same instance, and images whose orientation, size or pixel
  spacing differ from the main stack (a coronal localizer stored in the axial series);
* the main stack is sorted along its slice normal and checked: fewer than
  :data:`MIN_SLICES` slices, two images at one position, a gap (a step over 1.5 times the
  usual one), slices shifted sideways (gantry tilt) or positions more than
  :data:`UNEVEN_REFUSED` of a slice off an even spacing make the series unusable (the
  volume's geometry would be wrong); smaller irregularities above :data:`UNEVEN_WARNED` are
  read at the mean spacing with a warning.

The series to segment (:func:`choose_series`): the one asked for by UID (or series number);
else, among the usable series (CT ones if any, axial stacks if any), the one with the most
slices when it has at least :data:`CLEAR_MAJORITY` times as many as the next one. Otherwise
(two phases, two reconstructions) the choice is the user's: ``InputError`` lists them.
The pixels of exactly the chosen files are then read by SimpleITK, with the geometry found
here (:func:`volume_io.read_volume_and_source`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

MIN_SLICES = 3
UNEVEN_WARNED = 0.01  # of the slice spacing: deviations from even spacing below are rounding
UNEVEN_REFUSED = 0.1  # beyond: refused (the DICOM SEG's grid tolerance is 0.1 voxel too)
GAP_FACTOR = 1.5  # a step this much over the usual one is a gap (missing slices)
CLEAR_MAJORITY = 1.5  # the largest candidate series wins only by this factor
ORIENTATION_TOLERANCE = 1e-3  # direction cosines of one stack
SHEAR_TOLERANCE = 0.5  # pixels: how far the last slice may be shifted sideways
NAMES_SHOWN = 3  # file names listed per reason for leaving files out
SERIES_OPTION = "--dicom-series UID"


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a DICOM folder: the files that make its volume, sorted along the slice
    normal, what was left out and why, and ``problem`` when no volume can be read from it."""

    folder: Path
    uid: str
    number: int | None
    description: str
    modality: str
    files: tuple[Path, ...] = ()
    orientation: tuple[float, ...] = ()  # ImageOrientationPatient of the stack (LPS)
    rows: int = 0
    columns: int = 0
    pixel_spacing: tuple[float, float] = (0.0, 0.0)  # between rows, between columns (mm)
    slice_spacing: float = 0.0  # mm, mean over the stack
    origin: tuple[float, ...] = ()  # ImagePositionPatient of the first file (LPS)
    left_out: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    problem: str | None = None
    rescale_varies: bool = field(default=False, repr=False)

    @property
    def images(self) -> int:
        return len(self.files)

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def plane(self) -> str:
        """``axial``, ``coronal``, ``sagittal`` or ``oblique`` (``unknown`` without images)."""
        if len(self.orientation) != 6:
            return "unknown"
        return plane_name(np.array(self.orientation, dtype=float))

    def describe(self) -> str:
        """One line naming the series: number, description, modality, images, UID."""
        number = "?" if self.number is None else self.number
        images = f"{self.images} {self.plane} images" if self.files else "no image slices"
        what = f"{self.modality or 'no modality'}, {images}"
        return f"series {number} '{self.description}' ({what}, UID {self.uid})"

    def ijk_to_lps(self) -> np.ndarray:
        """4×4 matrix from (column, row, slice) indices to LPS millimetres."""
        orientation = np.array(self.orientation, dtype=float)
        row, column = orientation[:3], orientation[3:]
        matrix = np.eye(4)
        matrix[:3, 0] = row * self.pixel_spacing[1]
        matrix[:3, 1] = column * self.pixel_spacing[0]
        matrix[:3, 2] = np.cross(row, column) * self.slice_spacing
        matrix[:3, 3] = self.origin
        return matrix


def plane_name(orientation: np.ndarray) -> str:
    normal = np.abs(np.cross(orientation[:3], orientation[3:]))
    if normal.max() < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[int(np.argmax(normal))]


# Headers -------------------------------------------------------------------------------------
def read_header(path: Path) -> Any | None:
    """The header of a DICOM file (pydicom, no pixel data), or None for other files."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:  # no preamble: still DICOM if it starts with group 0002 or 0008
        with open(path, "rb") as stream:
            if stream.read(2) not in (b"\x02\x00", b"\x08\x00"):
                return None
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            return None
        return dataset if "SOPInstanceUID" in dataset else None
    except Exception:
        return None


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _leave_out_reason(dataset: Any) -> str | None:
    """Why an image cannot be a slice of a volume, or None."""
    if "Rows" not in dataset or "Columns" not in dataset:
        return f"not an image ({dataset.get('Modality', '') or 'no modality'} object)"
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        return "a multi-frame image (only single-frame slices are read)"
    image_type = {str(v).upper() for v in (dataset.get("ImageType") or [])}
    if image_type & {"LOCALIZER", "SCOUT"}:
        return "a localizer (Image Type LOCALIZER)"
    if not all(k in dataset for k in ("ImagePositionPatient", "ImageOrientationPatient")):
        return "no position or orientation (a screenshot or secondary capture?)"
    if "PixelSpacing" not in dataset:
        return "no pixel spacing"
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        return "a colour image (a screenshot or secondary capture?)"
    try:
        orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
        position = np.array(dataset.ImagePositionPatient, dtype=float)
        spacing = np.array(dataset.PixelSpacing, dtype=float)
    except (TypeError, ValueError):
        return "an unreadable position, orientation or pixel spacing"
    if orientation.shape != (6,) or position.shape != (3,) or spacing.shape != (2,):
        return "an invalid position, orientation or pixel spacing"
    norms = np.linalg.norm(orientation.reshape(2, 3), axis=1)
    if not np.allclose(norms, 1.0, atol=1e-2) or (spacing <= 0).any():
        return "an invalid orientation or pixel spacing"
    return None


def _geometry(dataset: Any) -> tuple[np.ndarray, int, int, np.ndarray]:
    orientation = np.array(dataset.ImageOrientationPatient, dtype=float).reshape(2, 3)
    orientation /= np.linalg.norm(orientation, axis=1, keepdims=True)
    spacing = np.array(dataset.PixelSpacing, dtype=float)
    return orientation.ravel(), int(dataset.Rows), int(dataset.Columns), spacing


def _same_geometry(a: tuple, b: tuple) -> bool:
    return (
        np.allclose(a[0], b[0], atol=ORIENTATION_TOLERANCE)
        and a[1:3] == b[1:3]
        and np.allclose(a[3], b[3], rtol=1e-3)
    )


def _reasons(named: dict[str, list[str]]) -> tuple[str, ...]:
    lines = []
    for reason, names in named.items():
        shown = ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")
        count = f"{len(names)} file{'s' if len(names) > 1 else ''}"
        lines.append(f"{count} left out, {reason}: {shown}")
    return tuple(lines)


# One series ----------------------------------------------------------------------------------
def _series_info(folder: Path, uid: str, items: list[tuple[Path, Any]]) -> SeriesInfo:
    first = items[0][1]
    number = first.get("SeriesNumber")
    base = {
        "folder": folder,
        "uid": uid,
        "number": int(number) if number not in (None, "") else None,
        "description": str(first.get("SeriesDescription", "") or "").strip(),
        "modality": str(first.get("Modality", "") or "").strip(),
    }
    left: dict[str, list[str]] = {}
    stacks: list[tuple[tuple, list[tuple[Path, Any]]]] = []
    seen: set[str] = set()
    for path, dataset in items:
        name = str(path.relative_to(folder))
        reason = _leave_out_reason(dataset)
        if reason is None and str(dataset.SOPInstanceUID) in seen:
            reason = "a further copy of an instance already read"
        if reason is not None:
            left.setdefault(reason, []).append(name)
            continue
        seen.add(str(dataset.SOPInstanceUID))
        geometry = _geometry(dataset)
        for key, members in stacks:
            if _same_geometry(key, geometry):
                members.append((path, dataset))
                break
        else:
            stacks.append((geometry, [(path, dataset)]))
    if not stacks:
        problem = "none of its files is an image slice" + (
            f" ({'; '.join(_reasons(left))})" if left else ""
        )
        return SeriesInfo(**base, left_out=_reasons(left), problem=problem)
    stacks.sort(key=lambda s: (len(s[1]), plane_name(s[0][0]) == "axial"), reverse=True)
    (orientation, rows, columns, spacing), members = stacks[0]
    main_plane = plane_name(orientation)
    for (other, other_rows, other_columns, _), others in stacks[1:]:
        if not np.allclose(other, orientation, atol=ORIENTATION_TOLERANCE):
            reason = f"a localizer or reformat ({plane_name(other)}, not the {main_plane} stack)"
        elif (other_rows, other_columns) != (rows, columns):
            reason = f"another image size ({other_rows}×{other_columns}) than the main stack"
        else:
            reason = "another pixel spacing than the main stack"
        left.setdefault(reason, []).extend(str(p.relative_to(folder)) for p, _ in others)
    stack = _check_stack(folder, members, orientation, spacing)
    rescales = {
        (float(d.get("RescaleSlope", 1) or 1), float(d.get("RescaleIntercept", 0) or 0))
        for _, d in members
    }
    return SeriesInfo(
        **base,
        orientation=tuple(float(v) for v in orientation),
        rows=rows,
        columns=columns,
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        left_out=_reasons(left),
        rescale_varies=len(rescales) > 1,
        **stack,
    )


def _check_stack(
    folder: Path, members: list[tuple[Path, Any]], orientation: np.ndarray, spacing: np.ndarray
) -> dict[str, Any]:
    """Sorted files, mean slice spacing, origin, and the stack's warnings or problem."""
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([d.ImagePositionPatient for _, d in members], dtype=float)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    positions, distances = positions[order], distances[order]
    files = tuple(members[i][0] for i in order)
    result: dict[str, Any] = {"files": files, "origin": tuple(float(v) for v in positions[0])}
    count = len(files)
    if count < MIN_SLICES:
        result["problem"] = (
            f"only {count} image slice{'s' if count > 1 else ''} (at least {MIN_SLICES} are "
            "needed for a volume)"
        )
        return result
    steps = np.diff(distances)
    names = [str(p.relative_to(folder)) for p in files]
    same = np.flatnonzero(steps < 1e-2)
    if same.size:
        pairs = "; ".join(f"{names[i]} and {names[i + 1]}" for i in same[:NAMES_SHOWN])
        more = f" and {same.size - NAMES_SHOWN} more" if same.size > NAMES_SHOWN else ""
        result["problem"] = (
            f"images at the same slice position ({pairs}{more}): several acquisitions or "
            "phases in one series?"
        )
        return result
    usual = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * usual)
    if gaps.size:
        i = gaps[0]
        result["problem"] = (
            f"a gap: {steps[i]:.2f} mm between {names[i]} and {names[i + 1]} where the slices are "
            f"{usual:.2f} mm apart (missing slices?)"
            + (f", and {gaps.size - 1} more" if gaps.size > 1 else "")
        )
        return result
    mean = float((distances[-1] - distances[0]) / (count - 1))
    result["slice_spacing"] = mean
    deviation = float(np.max(np.abs(distances - distances[0] - mean * np.arange(count))))
    sideways = positions[-1] - positions[0] - normal * (distances[-1] - distances[0])
    shift = float(np.max(np.abs(orientation.reshape(2, 3) @ sideways) / spacing[::-1]))
    if shift > SHEAR_TOLERANCE:
        result["problem"] = (
            f"its slices are shifted sideways by {shift:.1f} pixels from first to last (gantry "
            "tilt?); resample it to a regular grid first"
        )
    elif deviation > UNEVEN_REFUSED * mean:
        result["problem"] = (
            f"uneven slice spacing: positions deviate up to {deviation:.2f} mm from an even "
            f"{mean:.2f} mm spacing (steps from {steps.min():.2f} to {steps.max():.2f} mm)"
        )
    elif deviation > UNEVEN_WARNED * mean:
        result["warnings"] = (
            f"slightly uneven slice spacing: positions deviate up to {deviation:.2f} mm from "
            f"an even spacing; read at the mean spacing of {mean:.3f} mm",
        )
    return result


# The folder -----------------------------------------------------------------------------------
def list_dicom_series(folder: str | Path) -> list[SeriesInfo]:
    """Every DICOM series under ``folder`` (recursively), by series number then UID."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DICOM folder not found: {folder}")
    by_uid: dict[str, list[tuple[Path, Any]]] = {}
    for path in _files(folder):
        dataset = read_header(path)
        if dataset is None or not dataset.get("SeriesInstanceUID"):
            continue
        by_uid.setdefault(str(dataset.SeriesInstanceUID), []).append((path, dataset))
    series = [_series_info(folder, uid, items) for uid, items in by_uid.items()]
    return sorted(series, key=lambda s: (s.number is None, s.number or 0, s.uid))


def choose_series(
    series: Sequence[SeriesInfo], folder: str | Path, series_uid: str | None = None
) -> SeriesInfo:
    """The series to read (see the module's rule); ``InputError`` names what is wrong."""
    folder = Path(folder)
    if not series:
        raise InputError(f"{folder} is a folder without a DICOM series.")
    if series_uid:
        wanted = str(series_uid).strip()
        matches = [s for s in series if s.uid == wanted] or [
            s for s in series if s.number is not None and str(s.number) == wanted
        ]
        if len(matches) != 1:
            found = "several series have" if matches else "no series has"
            raise InputError(
                f"In {folder}, {found} the UID or number {wanted}; its series: "
                + "; ".join(s.describe() for s in (matches or series))
            )
        chosen = matches[0]
        if chosen.problem:
            raise InputError(f"{chosen.describe()} in {folder} is unusable: {chosen.problem}.")
        return chosen
    usable = [s for s in series if s.usable]
    if not usable:
        if len(series) == 1:
            raise InputError(
                f"The DICOM series in {folder} cannot be read as a volume: {series[0].problem}."
            )
        raise InputError(
            f"None of the {len(series)} DICOM series in {folder} can be read as a volume: "
            + "; ".join(f"{s.describe()}: {s.problem}" for s in series)
        )
    candidates = [s for s in usable if s.modality.upper() == "CT"] or usable
    candidates = [s for s in candidates if s.plane == "axial"] or candidates
    candidates = sorted(candidates, key=lambda s: s.images, reverse=True)
    if len(candidates) > 1 and candidates[0].images < CLEAR_MAJORITY * candidates[1].images:
        close = [s for s in candidates if s.images * CLEAR_MAJORITY > candidates[0].images]
        raise InputError(
            f"{folder} holds {len(close)} DICOM series that could be the CT to segment: "
            + "; ".join(s.describe() for s in close)
            + f". Choose one with {SERIES_OPTION} (series_uid in Python)."
        )
    return candidates[0]


def find_series(
    folder: str | Path, series_uid: str | None = None
) -> tuple[SeriesInfo, list[SeriesInfo]]:
    """The chosen series of ``folder`` and every series found there (the chosen one too)."""
    series = list_dicom_series(folder)
    return choose_series(series, folder, series_uid), series
