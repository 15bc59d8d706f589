"""Reading and referencing real clinical DICOM series: the series chosen in a folder, its
localizer left out, gaps refused, and a DICOM SEG made despite what the headers lack.

The real series are read in place (never written); every edited series is a copy in tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import SHARED_DATA, require
from LiverXAILib.errors import InputError
from LiverXAILib.io.dicom_seg_sources import derived_uid
from LiverXAILib.io.dicom_series import find_series, list_dicom_series
from LiverXAILib.io.volumes import image_from_array, read_volume, read_volume_and_source
from LiverXAILib.slicer.exports import ExportError, check_dicom_seg_export, export_results
from LiverXAILib.slicer.headless import create_headless_application
from LiverXAILib.slicer.results import SegmentAndExplainResult
from LiverXAILib.slicer.scene import add_segmentation, add_volume_from_array, style_labelmap
from pydicom.uid import generate_uid

HCC_SERIES = SHARED_DATA / "dicom" / "hcctace_2144_series"  # 58 axial + 1 coronal localizer
HCC_CT = SHARED_DATA / "hcctace_2144" / "ct.nii.gz"  # the same CT as NIfTI
IRCADB_SERIES = SHARED_DATA / "dicom" / "ircadb01_p01_20slices"  # no Frame of Reference UID
LOCALIZER = "dicom-00001.dcm"
HCC_AXIAL = [f"dicom-{n:05d}.dcm" for n in range(2, 60)]


def copy_series(
    source: Path, target: Path, names: list[str] | None = None, edit: Callable | None = None
) -> Path:
    """Copy (some) files of a real series into ``target``, editing each header if asked."""
    target.mkdir(parents=True)
    for path in sorted(require(source).iterdir()):
        if names is not None and path.name not in names:
            continue
        if edit is None:
            shutil.copy2(path, target / path.name)
        else:
            dataset = pydicom.dcmread(path)
            edit(dataset)
            dataset.save_as(target / path.name)
    return target


def as_new_series(series_uid: str) -> Callable:
    """An edit making a file part of another series (new series and instance UIDs)."""

    def edit(dataset):
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid(entropy_srcs=[dataset.SOPInstanceUID, series_uid])
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.SeriesDescription = "copy"

    return edit


def synthetic_labels(array: np.ndarray) -> np.ndarray:
    """Liver (1): the body (over -300 HU) inside a central ellipse, on every slice; tumour (2):
    a ball in the middle slices. The CT's own values shape it, the pipeline is not needed."""
    depth, rows, columns = array.shape
    k, j, i = np.ogrid[:depth, :rows, :columns]
    ellipse = ((j - rows * 0.55) / (rows * 0.2)) ** 2 + ((i - columns * 0.4) / (columns * 0.2)) ** 2
    labels = ((ellipse <= 1) & (array > -300)).astype(np.uint8)
    ball = (
        ((k - depth // 2) / 1.5) ** 2
        + ((j - rows * 0.55) / 8) ** 2
        + ((i - columns * 0.4) / 8) ** 2
    )
    labels[(ball <= 1) & (labels == 1)] = 2
    assert (labels == 1).any(axis=(1, 2)).all() and (labels == 2).sum() > 50
    return labels


@pytest.fixture(scope="module")
def app():
    return create_headless_application()


def export_seg(app, folder: Path, out: Path, series_uid: str | None = None) -> tuple:
    """Read ``folder`` as the CLI does, label it synthetically and export a DICOM SEG through
    ``export_results``; returns the SEG path, the labels, their IJK-to-RAS and the source."""
    array, ijk_to_ras, source = read_volume_and_source(folder, series_uid)
    labels = synthetic_labels(array)
    ct = add_volume_from_array(app.scene, array, ijk_to_ras, "ct")
    labelmap = add_volume_from_array(app.scene, labels, ijk_to_ras, "labels", True)
    style_labelmap(app.scene, labelmap)
    logic = app.appLogic.GetModuleLogic("Segmentations")
    segmentation = add_segmentation(app.scene, logic, labelmap, ct, "segmentation")
    result = SegmentAndExplainResult(
        labelmap.GetID(), {}, segmentation.GetID(), 0.0, 0.0, 0, modelName="test"
    )
    paths = export_results(
        app.scene,
        ct,
        result,
        out,
        "dicom-seg",
        stem="ct",
        dicom_series_dir=folder,
        dicom_series_uid=source["seriesInstanceUID"],
    )
    return paths["dicom-seg"][0], labels, ijk_to_ras, source


def referenced_instances(seg) -> set[str]:
    (series,) = seg.ReferencedSeriesSequence
    return {item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence}


def instance_uids(folder: Path, names: list[str]) -> set[str]:
    return {pydicom.dcmread(folder / n, stop_before_pixels=True).SOPInstanceUID for n in names}


def test_the_localizer_is_left_out_and_the_volume_matches_the_nifti_case():
    array, matrix, source = read_volume_and_source(require(HCC_SERIES))
    assert array.shape == (58, 512, 512)
    np.testing.assert_allclose(np.linalg.norm(matrix[:3, :3], axis=0), [0.976562, 0.976562, 5.0])
    expected, expected_matrix = read_volume(require(HCC_CT))
    np.testing.assert_allclose(matrix, expected_matrix, atol=1e-3)
    np.testing.assert_array_equal(array, expected)
    assert source["files"] == 58
    (left_out,) = source["leftOut"]
    assert "localizer" in left_out and "coronal" in left_out and LOCALIZER in left_out
    (series,) = list_dicom_series(HCC_SERIES)
    assert series.images == 58 and LOCALIZER not in [p.name for p in series.files]
    assert series.slice_spacing == pytest.approx(5.0)


def test_the_source_names_the_series_read_and_is_json():
    _, _, source = read_volume_and_source(require(HCC_SERIES))
    assert json.loads(json.dumps(source)) == source
    assert source == {
        "path": str(HCC_SERIES),
        "kind": "dicom",
        "seriesInstanceUID": "1801040320200103051513090319.2144.3.4",
        "seriesNumber": 4,
        "seriesDescription": "31_EQP_Ax5.00mm",
        "modality": "CT",
        "files": 58,
        "leftOut": source["leftOut"],
        "warnings": [],
        "otherSeries": [],
    }
    _, _, file_source = read_volume_and_source(require(HCC_CT))
    assert file_source == {"path": str(HCC_CT), "kind": "file"}
    with pytest.raises(InputError, match="is a file, not a DICOM folder"):
        read_volume(HCC_CT, series_uid="1.2.3")


def test_a_seg_references_only_the_axial_slices_and_reads_back(app, tmp_path):
    seg_path, labels, _, _ = export_seg(app, require(HCC_SERIES), tmp_path)
    seg = pydicom.dcmread(seg_path)
    assert referenced_instances(seg) == instance_uids(HCC_SERIES, HCC_AXIAL)
    assert seg.SpecificCharacterSet == "ISO_IR 192"  # as the source
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(5.0)  # not the 1.25 thickness
    import highdicom as hd

    sources = sorted(
        (pydicom.dcmread(HCC_SERIES / n, stop_before_pixels=True) for n in HCC_AXIAL),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    pixels = hd.seg.segread(seg_path).get_pixels_by_source_instance(
        [d.SOPInstanceUID for d in sources], [1, 2], assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(pixels, np.stack([labels == 1, labels == 2], axis=-1))


def test_an_empty_character_set_reads_and_exports(app, tmp_path):
    def empty_character_set(dataset):
        dataset.SpecificCharacterSet = ""

    names = HCC_AXIAL[20:28]
    folder = copy_series(HCC_SERIES, tmp_path / "ge", names, empty_character_set)
    assert pydicom.dcmread(folder / names[0]).SpecificCharacterSet == ""
    notes = check_dicom_seg_export(folder)
    assert any("Specific Character Set '' is empty or invalid" in n for n in notes)
    seg_path, labels, _, source = export_seg(app, folder, tmp_path / "out")
    assert source["files"] == 8
    seg = pydicom.dcmread(seg_path)
    assert seg.SpecificCharacterSet == "ISO_IR 192"
    assert str(seg.PatientName) == "RadCTTACEomics_2144"
    assert referenced_instances(seg) == instance_uids(folder, names)


def test_missing_and_invalid_patient_and_study_attributes_are_left_empty(app, tmp_path):
    def damage(dataset):
        with warnings.catch_warnings():  # pydicom warns of the invalid date: it is meant
            warnings.simplefilter("ignore")
            dataset.PatientSex, dataset.StudyDate = "U", "2009"
        del dataset.StudyTime, dataset.AccessionNumber

    folder = copy_series(IRCADB_SERIES, tmp_path / "damaged", None, damage)
    notes = check_dicom_seg_export(folder)
    assert (
        "the SEG leaves empty what the source images lack: AccessionNumber (missing), "
        "StudyDate (invalid: '2009'), StudyTime (missing), PatientSex (invalid: 'U')"
    ) in notes
    seg = pydicom.dcmread(export_seg(app, folder, tmp_path / "out")[0])
    assert (seg.PatientSex, seg.StudyDate, seg.AccessionNumber) == ("", "", "")


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


def test_a_series_without_frame_of_reference_exports_with_a_derived_one(app, tmp_path):
    before = digest(require(IRCADB_SERIES))
    assert "FrameOfReferenceUID" not in pydicom.dcmread(next(IRCADB_SERIES.iterdir()))
    (note,) = check_dicom_seg_export(IRCADB_SERIES)
    assert "no Frame of Reference UID" in note
    first, _, _, source = export_seg(app, IRCADB_SERIES, tmp_path / "one")
    again, _, _, _ = export_seg(app, IRCADB_SERIES, tmp_path / "two")
    expected = derived_uid("FrameOfReferenceUID", source["seriesInstanceUID"])
    assert expected in note
    assert pydicom.dcmread(first).FrameOfReferenceUID == expected  # the same every time
    assert pydicom.dcmread(again).FrameOfReferenceUID == expected
    assert len(referenced_instances(pydicom.dcmread(first))) == 20
    assert digest(IRCADB_SERIES) == before  # the source files are untouched


def test_a_folder_with_two_series_reads_the_larger_and_names_both(app, tmp_path):
    study = tmp_path / "study"
    copy_series(HCC_SERIES, study / "hcc")
    copy_series(IRCADB_SERIES, study / "ircadb")
    ircadb_uid = pydicom.dcmread(next(IRCADB_SERIES.iterdir())).SeriesInstanceUID
    array, _, source = read_volume_and_source(study)
    assert array.shape[0] == 58
    assert source["seriesDescription"] == "31_EQP_Ax5.00mm"
    assert source["leftOut"] and "hcc/dicom-00001.dcm" in source["leftOut"][0]
    (other,) = source["otherSeries"]
    assert ircadb_uid in other and "20 axial images" in other
    # the other one when asked for, by UID, and its SEG references it
    seg_path, _, _, chosen = export_seg(app, study, tmp_path / "out", ircadb_uid)
    assert chosen["seriesInstanceUID"] == ircadb_uid and chosen["files"] == 20
    assert pydicom.dcmread(seg_path).ReferencedSeriesSequence[0].SeriesInstanceUID == ircadb_uid
    with pytest.raises(InputError, match="no series has the UID or number 1.2.3; its series"):
        read_volume(study, series_uid="1.2.3")


def test_two_similar_series_are_refused_naming_both(tmp_path):
    study = tmp_path / "study"
    copy_series(HCC_SERIES, study / "a", HCC_AXIAL)
    copy_series(HCC_SERIES, study / "b", HCC_AXIAL[:40], as_new_series("1.2.826.0.1.99.7"))
    message = r"holds 2 DICOM series that could be the CT.*2144\.3\.4.*1\.2\.826\.0\.1\.99\.7"
    with pytest.raises(InputError, match=message + r".*--dicom-series UID"):
        read_volume(study)
    with pytest.raises(InputError, match=message):
        check_dicom_seg_export(study)
    assert read_volume(study, series_uid="1.2.826.0.1.99.7")[0].shape[0] == 40


def test_gaps_duplicates_and_uneven_slices_are_refused_small_unevenness_warned(tmp_path):
    gap = copy_series(HCC_SERIES, tmp_path / "gap", HCC_AXIAL[:29] + HCC_AXIAL[30:])
    between = r"a gap: 10\.00 mm between dicom-0003[02]\.dcm and dicom-0003[02]\.dcm"
    with pytest.raises(InputError, match=f"{re.escape(str(gap))} cannot be read.*{between}"):
        read_volume(gap)

    duplicate = copy_series(HCC_SERIES, tmp_path / "duplicate", HCC_AXIAL)
    dataset = pydicom.dcmread(duplicate / HCC_AXIAL[5])
    dataset.SOPInstanceUID = generate_uid()
    dataset.save_as(duplicate / "extra.dcm")
    with pytest.raises(InputError, match="at the same slice position.*extra.dcm"):
        read_volume(duplicate)

    def shift(millimetres):
        def edit(dataset):
            if dataset.InstanceNumber == 30:
                dataset.ImagePositionPatient[2] += millimetres

        return edit

    uneven = copy_series(HCC_SERIES, tmp_path / "uneven", HCC_AXIAL, shift(1.0))
    with pytest.raises(InputError, match="uneven slice spacing: positions deviate up to 1.00"):
        read_volume(uneven)
    slightly = copy_series(HCC_SERIES, tmp_path / "slightly", HCC_AXIAL, shift(0.2))
    array, matrix, source = read_volume_and_source(slightly)
    assert array.shape[0] == 58 and np.linalg.norm(matrix[:3, 2]) == pytest.approx(5.0)
    (warning,) = source["warnings"]
    assert "slightly uneven slice spacing: positions deviate up to 0.20 mm" in warning

    few = copy_series(HCC_SERIES, tmp_path / "few", HCC_AXIAL[:2])
    with pytest.raises(InputError, match="only 2 image slices"):
        read_volume(few)
    info, _ = find_series(HCC_SERIES)
    assert info.usable and info.warnings == ()


def test_the_seg_check_refuses_what_is_not_a_dicom_folder(tmp_path):
    with pytest.raises(
        ExportError,
        match="--export dicom-seg needs a DICOM series folder as input; ct.nii.gz is a NIfTI file",
    ):
        check_dicom_seg_export(require(HCC_CT))
    with pytest.raises(InputError, match="without a DICOM series"):
        check_dicom_seg_export(tmp_path)
    gap = copy_series(HCC_SERIES, tmp_path / "gap", HCC_AXIAL[:29] + HCC_AXIAL[30:])
    with pytest.raises(InputError, match=f"{re.escape(str(gap))} cannot be read.*a gap"):
        check_dicom_seg_export(gap)
    assert check_dicom_seg_export(HCC_SERIES) == []


def dcmqi_reader() -> str:
    """dcmqi's ``segimage2itkimage``, the reader of Slicer's QuantitativeReporting (the
    ``dcmqi`` wheel of the test extra). Missing, the test fails: it is never skipped."""
    try:
        import dcmqi

        binary = Path(dcmqi.__file__).parent / "bin" / "segimage2itkimage"
    except ImportError:
        binary = None
    if binary is not None and binary.is_file():
        return str(binary)
    found = shutil.which("segimage2itkimage")
    if found is None:
        pytest.fail("dcmqi's segimage2itkimage is not installed: pip install dcmqi (test extra)")
    return found


@pytest.mark.parametrize("series", [HCC_SERIES, IRCADB_SERIES], ids=["hcctace", "ircadb"])
def test_dcmqi_decodes_the_seg_onto_the_series_grid(app, tmp_path, series):
    seg_path, labels, ijk_to_ras, _ = export_seg(app, require(series), tmp_path / "seg")
    out = tmp_path / "dcmqi"
    out.mkdir()
    command = [dcmqi_reader(), "--inputDICOM", str(seg_path), "--outputDirectory", str(out)]
    run = subprocess.run([*command, "-t", "nrrd"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    groups = json.loads((out / "meta.json").read_text(encoding="utf-8"))["segmentAttributes"]
    grid = image_from_array(np.zeros(labels.shape, np.uint8), ijk_to_ras)  # the CT's, in LPS
    decoded = np.zeros(labels.shape, np.uint8)
    for number, group in enumerate(groups, start=1):
        image = sitk.ReadImage(str(out / f"{number}.nrrd"))
        # every slice of the series (liver is on each), at its spacing, from its first slice
        assert image.GetSize() == grid.GetSize()
        np.testing.assert_allclose(image.GetSpacing(), grid.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), grid.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(image.GetDirection(), grid.GetDirection(), atol=1e-6)
        nearest = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        values = sitk.GetArrayFromImage(nearest)
        for segment in group:
            value = {"liver": 1, "tumor": 2}[segment["SegmentLabel"]]
            decoded[values == segment["labelID"]] = value
    np.testing.assert_array_equal(decoded, labels)  # each voxel where the mask put it
