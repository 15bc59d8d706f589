"""Checks before Segment & Explain starts: the CT array and its geometry, in words a clinician
reads (the run's options are checked by ``options.SegmentAndExplainOptions.validate``).

Refused (``InputError``): no voxels, no finite value, mostly non-finite values, a constant
volume, values that do not look like Hounsfield units (unless allowed), a geometry that cannot
place a voxel (zero or non-finite spacing) and voxel axes that are not perpendicular (a sheared
grid, e.g. a gantry-tilted acquisition: the outputs could not keep its geometry).

Accepted with a warning that travels into the result and the report: a few non-finite voxels
(NaN, ±infinity; they are set to the lowest finite value of the volume, usually air or the
scanner's padding) and a voxel size or field of view unusual for abdominal CT, which makes
every volume in mL suspect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, NotHounsfieldError

MAX_NON_FINITE_FRACTION = 0.5  # more than this is not a CT with a few bad voxels
ORTHOGONALITY_TOLERANCE = 1e-3  # |cos| between voxel axes (about 0.06 degrees)
IN_PLANE_SPACING_MM = (0.2, 4.0)  # abdominal CT: about 0.5 to 1 mm; resampled up to 3
SLICE_SPACING_MM = (0.3, 12.0)  # thin slices to thick 10 mm ones
FIELD_OF_VIEW_MM = (150.0, 700.0)  # an abdomen is about 300 to 500 mm wide


@dataclass
class CheckedInput:
    """The array to segment (a cleaned copy when values were replaced) and the warnings."""

    array: np.ndarray
    warnings: list[str] = field(default_factory=list)


def check_ct_array(
    array: np.ndarray, ijk_to_ras: np.ndarray, name: str, allow_non_hu: bool = False
) -> CheckedInput:
    """Refuse what cannot be segmented; return the array to use and warnings to show.

    ``array`` is never modified: non-finite voxels are replaced in a copy.
    """
    warnings = check_geometry(ijk_to_ras, array.shape, name)
    if array.size == 0:
        raise InputError(f"{name} is empty: it holds no voxels.")
    array, non_finite = _finite_values(array, name)
    if non_finite:
        warnings.insert(0, non_finite)
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise InputError(
            f"{name} is constant (every voxel is {low:g}); there is nothing to segment."
        )
    if not allow_non_hu and (low > -500 or high < 100):
        raise NotHounsfieldError(
            f"{name} does not look like CT in Hounsfield units: values run from {low:g} to "
            f"{high:g}, while CT has air near -1000 HU and soft tissue near 40 HU. Results may be "
            "meaningless; run anyway only if you are sure."
        )
    return CheckedInput(array, warnings)


def _finite_values(array: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """The array with non-finite voxels set to the lowest finite value, and a warning."""
    if not np.issubdtype(array.dtype, np.floating):
        return array, ""
    finite = np.isfinite(array)
    count = int(finite.size - np.count_nonzero(finite))
    if count == 0:
        return array, ""
    if count == finite.size:
        raise InputError(
            f"{name} holds no numbers: every voxel is NaN or infinite. The file is damaged or "
            "was written by a failed conversion."
        )
    if count > MAX_NON_FINITE_FRACTION * finite.size:
        raise InputError(
            f"{name}: {count} of {finite.size} voxels ({100 * count / finite.size:.0f} %) are "
            "NaN or infinite; this is not a CT with a few bad voxels. Check the conversion that "
            "wrote it."
        )
    fill = float(array[finite].min())
    cleaned = np.where(finite, array, np.asarray(fill, dtype=array.dtype))
    share = 100 * count / finite.size
    return cleaned, (
        f"{count} voxels ({share:.2g} % of the volume) were not numbers (NaN or infinite); they "
        f"were treated as {fill:g}, the lowest value of the volume (air or padding)."
    )


def check_geometry(ijk_to_ras: np.ndarray, shape: tuple[int, ...], name: str) -> list[str]:
    """Refuse a grid that cannot be kept; warn about a voxel size unusual for abdominal CT.

    ``shape`` is the array's (K, J, I) shape; spacing is read from the IJK-to-RAS matrix.
    """
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise InputError(f"{name} has no valid geometry (its voxel-to-patient matrix is broken).")
    axes = matrix[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)  # I, J, K
    if (spacing <= 0).any():
        raise InputError(
            f"{name} has a voxel size of zero ({_mm(spacing)}); its geometry is broken."
        )
    directions = axes / spacing
    cosines = np.abs(directions.T @ directions - np.eye(3))
    if cosines.max() > ORTHOGONALITY_TOLERANCE:
        angle = 90.0 - np.degrees(np.arccos(min(float(cosines.max()), 1.0)))
        raise InputError(
            f"{name} has voxel axes that are not perpendicular (sheared by {angle:.1f}°, as in a "
            "gantry-tilted scan). Its labels could not keep that geometry: resample it to a "
            "regular grid first (in Slicer: Resample Scalar Volume, or the DICOM module's "
            "acquisition geometry regularization)."
        )
    warnings = []
    in_plane, through = spacing[:2], spacing[2]
    if not (IN_PLANE_SPACING_MM[0] <= in_plane.min() and in_plane.max() <= IN_PLANE_SPACING_MM[1]):
        warnings.append(
            f"Unusual pixel size {in_plane[0]:.3g} × {in_plane[1]:.3g} mm (abdominal CT has about "
            "0.5–1 mm): check the voxel spacing; volumes in mL depend on it."
        )
    if not SLICE_SPACING_MM[0] <= through <= SLICE_SPACING_MM[1]:
        warnings.append(
            f"Unusual slice spacing {through:.3g} mm (abdominal CT has about 0.5–5 mm): check "
            "the voxel spacing; volumes in mL depend on it."
        )
    if len(shape) == 3:
        extent = in_plane * np.array([shape[2], shape[1]], dtype=float)
        if not (FIELD_OF_VIEW_MM[0] <= extent.max() <= FIELD_OF_VIEW_MM[1]):
            warnings.append(
                f"The image is {extent[0]:.0f} × {extent[1]:.0f} mm across; an abdomen is about "
                "300–500 mm wide. The voxel spacing may be wrong, and with it every volume."
            )
    return warnings


def _mm(spacing: np.ndarray) -> str:
    return " × ".join(f"{value:g}" for value in spacing) + " mm"
