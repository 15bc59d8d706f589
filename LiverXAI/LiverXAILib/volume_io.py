"""Read and write volumes as (array in Slicer's K, J, I order, IJK-to-RAS matrix).

SimpleITK reads NIfTI, NRRD and DICOM series folders; its LPS physical space is converted to
Slicer's RAS. Writes are atomic: a temporary file beside the target, then a rename.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_stem(path: str | Path) -> str:
    """File name without its volume suffix (``case.nii.gz`` → ``case``)."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_image(path: Path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise InputError(f"{path} is a folder without a DICOM series.")
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
        return reader.Execute()
    if not path.is_file():
        raise InputError(f"Input not found: {path}")
    check_complete(path)
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


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Array (K, J, I) and its 4×4 IJK-to-RAS matrix; errors name 2D, 4D and vector inputs."""
    path = Path(path)
    image = _read_image(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path.name} has {image.GetNumberOfComponentsPerPixel()} values per voxel (a vector "
            "or colour image); a single-channel CT volume is needed."
        )
    if image.GetDimension() != 3:
        raise InputError(f"{path.name} is {image.GetDimension()}D; a 3D CT volume is needed.")
    return sitk.GetArrayFromImage(image), ijk_to_ras_from_image(image)


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
