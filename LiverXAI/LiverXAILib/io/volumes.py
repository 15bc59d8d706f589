"""Read and write volumes as (array in Slicer's K, J, I order, IJK-to-RAS matrix).

SimpleITK reads NIfTI, NRRD and MetaImage files; a DICOM folder is read through
:mod:`dicom_series` (the series chosen, localizers and other misfits left out, the slices checked
for gaps). LPS physical space is converted to Slicer's RAS. Writes are atomic: a temporary file
beside the target, then a rename.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .atomic import atomic_path
from .nifti_non_finite import restore_non_finite

if TYPE_CHECKING:
    from .dicom_series import SeriesInfo

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_stem(path: str | Path) -> str:
    """File name without its volume suffix (``case.nii.gz`` → ``case``)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_image(path: Path, series_uid: str | None = None) -> tuple[sitk.Image, dict[str, Any]]:
    """The image and the description of its source (see :func:`read_volume_and_source`)."""
    if path.is_dir():
        from .dicom_series import find_series

        chosen, series = find_series(path, series_uid)
        return read_series_image(chosen), source_description(chosen, series)
    if not path.is_file():
        raise InputError(f"Input not found: {path}")
    if series_uid:
        raise InputError(
            f"A DICOM series ({series_uid}) was asked for, but {path.name} is a file, not a "
            "DICOM folder."
        )
    check_complete(path)
    return _read_file(path), {"path": str(path), "kind": "file"}


def read_series_image(info: SeriesInfo) -> sitk.Image:
    """The chosen files' pixels (rescaled, by SimpleITK) as a 3D ``sitk.Image`` in LPS, with
    the geometry of the sorted headers (mean slice spacing)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in info.files])
    if info.rescale_varies:  # one pixel type for slices rescaled differently
        reader.SetOutputPixelType(sitk.sitkFloat32)
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        reason = str(error).split("sitk::ERROR:")[-1].strip().split("\n")[0]
        raise InputError(f"Cannot read the pixels of {info.describe()}: {reason}") from error
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    if image.GetDimension() != 3 or image.GetSize()[2] != info.images:
        raise InputError(f"Reading {info.describe()} gave a {image.GetSize()} image.")
    matrix = info.ijk_to_lps()
    image.SetOrigin(matrix[:3, 3].tolist())
    image.SetSpacing(np.linalg.norm(matrix[:3, :3], axis=0).tolist())
    image.SetDirection((matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)).ravel().tolist())
    return image


def source_description(chosen: SeriesInfo, series: list[SeriesInfo]) -> dict[str, Any]:
    """JSON-ready description of the series read, for the report."""
    return {
        "path": str(chosen.folder),
        "kind": "dicom",
        "seriesInstanceUID": chosen.uid,
        "seriesNumber": chosen.number,
        "seriesDescription": chosen.description,
        "modality": chosen.modality,
        "files": chosen.images,
        "leftOut": list(chosen.left_out),
        "warnings": list(chosen.warnings),
        "otherSeries": [
            s.describe() + ("" if s.usable else f": unusable, {s.problem}")
            for s in series
            if s.uid != chosen.uid
        ],
    }


def _read_file(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).split("sitk::ERROR:")[-1].strip().split("\n")[0]
        raise InputError(f"Cannot read {path.name} as a volume: {reason}") from error


def check_complete(path: Path) -> None:
    """Refuse a truncated file: SimpleITK reads a cut-off NIfTI as if the rest were zeros.

    A gzip file must reach its end-of-stream marker with a valid CRC; an uncompressed NIfTI-1
    file must hold as many bytes as its header promises.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 22):
                    pass
        except gzip.BadGzipFile as error:
            raise InputError(
                f"Cannot read {path.name} as a volume: it ends in .gz but holds no gzip data."
            ) from error
        except (EOFError, OSError, zlib.error) as error:
            raise InputError(
                f"{path.name} is damaged or incomplete (its compressed data ends early or "
                f"fails its checksum: {error}). Copy the file again."
            ) from error
    elif name.endswith(".nii"):
        with open(path, "rb") as stream:
            header = stream.read(348)
        if len(header) < 348:
            return  # SimpleITK names a file too short for a header
        for order in "<>":
            if struct.unpack(order + "i", header[:4])[0] == 348:
                dims = struct.unpack(order + "8h", header[40:56])
                bitpix = struct.unpack(order + "h", header[72:74])[0]
                offset = struct.unpack(order + "f", header[108:112])[0]
                voxels = int(np.prod([max(d, 1) for d in dims[1 : 1 + max(dims[0], 0)]]))
                needed = int(offset) + voxels * bitpix // 8
                if path.stat().st_size < needed:
                    raise InputError(
                        f"{path.name} is incomplete: its header promises {needed} bytes, the "
                        f"file has {path.stat().st_size}. Copy the file again."
                    )
                return


def ijk_to_ras_from_image(image: sitk.Image) -> np.ndarray:
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction * np.array(image.GetSpacing(), dtype=float)
    matrix[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ matrix


def read_volume(path: str | Path, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Array (K, J, I) and its 4×4 IJK-to-RAS matrix; errors name 2D, 4D and vector inputs.
    ``series_uid`` picks a series of a DICOM folder (see :func:`read_volume_and_source`)."""
    array, ijk_to_ras, _ = read_volume_and_source(path, series_uid)
    return array, ijk_to_ras


def read_volume_and_source(
    path: str | Path, series_uid: str | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Like :func:`read_volume`, with a JSON-ready description of what was read:
    ``{"path", "kind": "file"}`` for a file; for a DICOM folder ``"kind": "dicom"`` and
    ``seriesInstanceUID``, ``seriesNumber``, ``seriesDescription``, ``modality``, ``files`` (the
    number read), ``leftOut`` and ``warnings`` (sentences) and ``otherSeries`` (one line per
    other series of the folder). ``series_uid`` (a UID or series number) picks the series of a
    folder holding several; without it the series is chosen by :func:`dicom_series.choose_series`.
    """
    path = Path(path)
    image, source = _read_image(path, series_uid)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path.name} has {image.GetNumberOfComponentsPerPixel()} values per voxel (a vector "
            "or colour image); a single-channel CT volume is needed."
        )
    if image.GetDimension() != 3:
        raise InputError(f"{path.name} is {image.GetDimension()}D; a 3D CT volume is needed.")
    array = sitk.GetArrayFromImage(image)
    if source["kind"] == "file":  # ITK reads NaN in a NIfTI file as 0: put them back
        array = restore_non_finite(array, path)
    return array, ijk_to_ras_from_image(image), source


def image_from_array(array: np.ndarray, ijk_to_ras: np.ndarray) -> sitk.Image:
    """SimpleITK image with the geometry given by an IJK-to-RAS matrix."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def write_volume(path: str | Path, array: np.ndarray, ijk_to_ras: np.ndarray) -> None:
    """Write atomically; the file name's suffix picks the format (.nii.gz, .nrrd, ...)."""
    suffix = Path(path).name[len(volume_stem(path)) :] or ".nrrd"
    with atomic_path(path, suffix=suffix) as temporary:
        sitk.WriteImage(image_from_array(array, ijk_to_ras), str(temporary), useCompression=True)
