"""Reading volumes gives Slicer's array order and RAS geometry, from files and DICOM series."""

from __future__ import annotations

import locale

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SAMPLE_SMALL_CT, require
from LiverXAILib.errors import InputError
from LiverXAILib.io.volumes import read_volume, read_volume_and_source, volume_stem, write_volume


def write_dicom_series(image: sitk.Image, folder) -> None:
    """A minimal CT DICOM series, one file per slice, with position and orientation tags.

    SimpleITK's DICOM writer (GDCM) sets the process's C locale to "C", which would make
    every later ``open()`` in the test session ASCII-only: the locale is put back after.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_series(image, folder)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(image: sitk.Image, folder) -> None:
    folder.mkdir()
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (*direction[0:9:3], *direction[1:9:3]))
    for k in range(image.GetDepth()):
        slice_image = sitk.Cast(image[:, :, k], sitk.sitkInt16)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": orientation,
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)


def test_nifti_geometry_is_converted_to_ras():
    array, matrix = read_volume(require(SAMPLE_SMALL_CT))
    image = sitk.ReadImage(str(SAMPLE_SMALL_CT))
    assert array.shape == image.GetSize()[::-1]
    origin_lps = np.array(image.GetOrigin())
    np.testing.assert_allclose(matrix[:3, 3], origin_lps * [-1, -1, 1])
    np.testing.assert_allclose(np.linalg.norm(matrix[:3, :3], axis=0), image.GetSpacing())


def test_dicom_series_folder_reads_like_the_file(tmp_path):
    image = sitk.ReadImage(str(require(SAMPLE_SMALL_CT)))
    write_dicom_series(image, tmp_path / "series")
    array, matrix = read_volume(tmp_path / "series")
    expected_array, expected_matrix = read_volume(SAMPLE_SMALL_CT)
    np.testing.assert_array_equal(array, expected_array)
    np.testing.assert_allclose(matrix, expected_matrix, atol=1e-4)


def test_a_dicom_folder_is_described_by_its_series_and_a_file_as_a_file(tmp_path):
    image = sitk.ReadImage(str(require(SAMPLE_SMALL_CT)))
    write_dicom_series(image, tmp_path / "series")
    (tmp_path / "series" / "notes.txt").write_text("not DICOM")
    array, _, source = read_volume_and_source(tmp_path / "series")
    assert array.shape[0] == image.GetDepth()
    assert source["kind"] == "dicom" and source["files"] == image.GetDepth()
    assert source["seriesInstanceUID"] == "1.2.826.0.1.3680043.2.1125.2"
    assert source["leftOut"] == source["warnings"] == source["otherSeries"] == []
    assert read_volume_and_source(SAMPLE_SMALL_CT)[2] == {
        "path": str(SAMPLE_SMALL_CT),
        "kind": "file",
    }


def test_write_then_read_keeps_geometry(tmp_path):
    array, matrix = read_volume(require(SAMPLE_SMALL_CT))
    write_volume(tmp_path / "copy.nrrd", array, matrix)
    again, again_matrix = read_volume(tmp_path / "copy.nrrd")
    np.testing.assert_array_equal(again, array)
    np.testing.assert_allclose(again_matrix, matrix, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.nrrd"]  # no temporary file left


def test_unusable_inputs_are_named(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="without a DICOM series"):
        read_volume(tmp_path / "empty")
    sitk.WriteImage(sitk.Image([8, 8, 4, 3], sitk.sitkInt16), str(tmp_path / "4d.nii.gz"))
    with pytest.raises(InputError, match="4D"):
        read_volume(tmp_path / "4d.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="values per voxel"):
        read_volume(tmp_path / "rgb.nrrd")
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    with pytest.raises(InputError, match="Cannot read junk.nii.gz"):
        read_volume(tmp_path / "junk.nii.gz")


def test_stem_strips_volume_suffixes():
    assert volume_stem("a/case.nii.gz") == "case"
    assert volume_stem("b.seg.nrrd") == "b.seg"
    assert volume_stem("dicom_folder") == "dicom_folder"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_a_truncated_file_is_refused_instead_of_read_as_zeros(tmp_path, suffix):
    """SimpleITK reads a NIfTI cut in half as a full volume padded with zeros."""
    whole = tmp_path / f"whole{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(require(SAMPLE_SMALL_CT))), str(whole))
    read_volume(whole)  # the complete file reads
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.nii(\.gz)? is (damaged or )?incomplete"):
        read_volume(cut)
