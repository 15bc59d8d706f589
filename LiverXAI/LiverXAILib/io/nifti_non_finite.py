"""Where a floating-point NIfTI file holds NaN or infinity.

ITK's NIfTI reader (and so SimpleITK's) turns NaN voxels into 0 without a word, so a volume
of NaN reads as "constant 0" and a strip of NaN outside the body as black tissue. This module
reads the raw voxel block of a NIfTI-1 or NIfTI-2 file (gzip or not), a few megabytes at a
time, and returns the flat indices of the non-finite voxels. The voxel block is stored x
fastest, the order of SimpleITK's array flattened, so the caller can put NaN back in place.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64
CHUNK_VOXELS = 1 << 20


def _header(path: Path) -> tuple[str, int, int, str] | None:
    """(byte order, voxel count, voxel offset, numpy type) of a float NIfTI file, else None."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as stream:
        header = stream.read(540)
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            datatype = struct.unpack(order + "h", header[70:72])[0]
            dims = struct.unpack(order + "8h", header[40:56])
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype = struct.unpack(order + "h", header[12:14])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = int(struct.unpack(order + "q", header[168:176])[0])
            break
    else:
        return None
    if datatype not in FLOAT_TYPES:
        return None
    count = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(int(dims[0]), 0)]]))
    return order, count, offset, FLOAT_TYPES[datatype]


def non_finite_indices(path: str | Path) -> np.ndarray:
    """Flat indices (in voxel order) of the NaN and infinite voxels of a NIfTI file; empty
    for a file that is not NIfTI or holds no floating-point voxels."""
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return np.empty(0, np.int64)
    header = _header(path)
    if header is None:
        return np.empty(0, np.int64)
    order, count, offset, kind = header
    dtype = np.dtype(order + kind)
    found = []
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as stream:
        stream.read(offset)
        for start in range(0, count, CHUNK_VOXELS):
            size = min(CHUNK_VOXELS, count - start)
            values = np.frombuffer(stream.read(size * dtype.itemsize), dtype=dtype)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                found.append(bad + start)
    return np.concatenate(found) if found else np.empty(0, np.int64)


def restore_non_finite(array: np.ndarray, path: str | Path) -> np.ndarray:
    """``array`` (as SimpleITK read ``path``) with NaN where the file holds NaN or infinity.

    Infinite voxels come back as NaN too: both are "not a number" to the checks that follow.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return array
    indices = non_finite_indices(path)
    if indices.size and indices.max() < array.size:
        array = np.array(array, copy=True)
        array.reshape(-1)[indices] = np.nan
    return array
