"""The DICOM SEG's source series: refused when the CT did not come from it, matched slice by
slice in any array order, and found among other series in a folder."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import test_exports
from conftest import SAMPLE_SMALL_CT, load_volume_node, require, restored
from LiverXAILib.errors import InputError
from LiverXAILib.io.dicom_seg import DicomSegError, dicom_files, read_headers, source_slices
from LiverXAILib.io.volumes import LPS_TO_RAS, read_volume
from LiverXAILib.slicer.exports import FORMATS, default_formats, export_results
from LiverXAILib.slicer.headless import create_headless_application
from LiverXAILib.slicer.logic import LiverXAILogic
from test_exports import write_ct_series

case = test_exports.case  # the export tests' fixture: its real run, once for this module too


def test_dicom_seg_is_refused_without_its_source_series_before_writing_anything(case, tmp_path):
    with pytest.raises(DicomSegError, match="did not come from DICOM.*must reference the source"):
        export_results(case.app.scene, case.node, case.result, tmp_path, ["nifti", "dicom-seg"])
    assert list(tmp_path.iterdir()) == []
    assert "dicom-seg" not in default_formats(case.node)
    assert default_formats(case.node, case.series) == FORMATS


def test_dicom_seg_is_refused_for_a_nifti_ct_and_a_series_it_does_not_come_from(case, tmp_path):
    app = create_headless_application()
    node = load_volume_node(app, SAMPLE_SMALL_CT, "nifti")
    result = LiverXAILogic(app.scene, app.appLogic).segmentAndExplain(
        node, explainClasses=[], uncertainty="none"
    )
    with pytest.raises(DicomSegError, match="nifti did not come from DICOM"):
        export_results(app.scene, node, result, tmp_path, "dicom-seg")
    with pytest.raises(DicomSegError, match="not the source of nifti.*off the grid"):
        export_results(app.scene, node, result, tmp_path, "dicom-seg", dicom_series_dir=case.series)
    with pytest.raises(DicomSegError, match="No DICOM images"):
        export_results(app.scene, node, result, tmp_path, "dicom-seg", dicom_series_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    paths = export_results(app.scene, node, result, tmp_path, "nrrd")  # no maps: the label only
    assert [p.name for p in paths["nrrd"]] == ["nifti_label.nrrd"]


def test_source_slices_find_each_files_pixels_in_any_array_order(case):
    sources = read_headers(dicom_files(case.series))
    (datasets,) = sources.values()
    array, matrix = read_volume(case.series)
    stored, stored_matrix = restored(array, matrix, (2, 0, 1), (True, False, True))
    slices = source_slices(datasets, stored_matrix, stored.shape)
    assert len(slices) == array.shape[0]
    for item in slices:
        pixels = pydicom.dcmread(item.dataset.filename).pixel_array
        np.testing.assert_array_equal(stored[item.k, item.j, item.i], pixels)

    shifted = stored_matrix.copy()
    shifted[:3, 3] += stored_matrix[:3, :3] @ [0.5, 0, 0]  # half a voxel along I
    with pytest.raises(DicomSegError, match="0.50 voxels off the grid"):
        source_slices(datasets, shifted, stored.shape)
    with pytest.raises(DicomSegError, match="29 slices do not cover"):
        source_slices(datasets[1:], stored_matrix, stored.shape)
    with pytest.raises(DicomSegError, match="lie on the same slice"):
        source_slices([*datasets, datasets[0]], stored_matrix, stored.shape)


def test_the_source_series_is_found_among_others_in_a_folder(case, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(case.series, folder / "tilted")
    array, ijk_to_ras = read_volume(require(SAMPLE_SMALL_CT))
    write_ct_series(array, LPS_TO_RAS @ ijk_to_ras, folder / "other")
    (folder / "notes.txt").write_text("not DICOM")
    assert len(read_headers(dicom_files(folder))) == 2
    source = pydicom.dcmread(next((folder / "tilted").iterdir()), stop_before_pixels=True)
    other = pydicom.dcmread(next((folder / "other").iterdir()), stop_before_pixels=True)
    with pytest.raises(InputError, match="holds 2 DICOM series.*--dicom-series"):
        read_volume(folder)  # two series of 30 slices: the reader asks which one

    def export(uid=None):  # without a UID, the series that fits the CT's grid
        options = {"formats": "dicom-seg", "dicom_series_dir": folder, "dicom_series_uid": uid}
        return export_results(
            case.app.scene, case.node, case.corrected, tmp_path / "out", **options
        )

    for uid in (None, source.SeriesInstanceUID):
        seg = pydicom.dcmread(export(uid)["dicom-seg"][0])
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    with pytest.raises(DicomSegError, match="not the source of CT from DICOM.*off the grid"):
        export(other.SeriesInstanceUID)  # the series named, and no other
