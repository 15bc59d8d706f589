"""Export with one action: NIfTI/NRRD volumes, STL/OBJ surfaces and a DICOM SEG, on a real
DICOM CT series made from the small sample CT and a real Segment & Explain run."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import slicer.util
import vtk
from conftest import SAMPLE_SMALL_CT, require
from LiverXAILib.io.volumes import LPS_TO_RAS, read_volume
from LiverXAILib.slicer.exports import (
    FORMATS,
    ExportError,
    check_formats,
    export_results,
    safe_stem,
    volume_node_ids,
)
from LiverXAILib.slicer.headless import create_headless_application
from LiverXAILib.slicer.logic import LiverXAILogic
from LiverXAILib.slicer.scene import (
    add_segmentation,
    add_volume_from_array,
    read_volume_node,
    style_labelmap,
)
from LiverXAILib.slicer.terminology import SEGMENT_TERMS
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from vtk.util import numpy_support

TILT_DEGREES = 8.0  # the test series is rotated about the body axis: a non-identity direction


def write_ct_series(array: np.ndarray, ijk_to_lps: np.ndarray, folder: Path) -> list[str]:
    """A CT series, one file per (K) slice, files and instance numbers in shuffled order;
    returns the SOP instance UIDs by slice."""
    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    row_direction, column_direction = ijk_to_lps[:3, 0] / spacing[0], ijk_to_lps[:3, 1] / spacing[1]
    order = list(range(array.shape[0]))
    random.Random(7).shuffle(order)
    uids = [generate_uid() for _ in order]
    for number, k in enumerate(order):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uids[k]
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, uids[k], "CT"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            "Test^Liver",
            "LX1",
            "",
            "O",
        )
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.ReferringPhysicianName, ds.AccessionNumber, ds.StudyID = "", "", "1"
        ds.SeriesNumber, ds.InstanceNumber = 3, array.shape[0] - k
        ds.Manufacturer, ds.PositionReferenceIndicator = "LiverXAI tests", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ijk_to_lps[:3] @ [0, 0, k, 1]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.Rows, ds.Columns = array.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType, ds.KVP = 0, 1, "HU", 120
        ds.PixelData = np.ascontiguousarray(array[k], dtype=np.int16).tobytes()
        ds.save_as(folder / f"IM{number:04d}.dcm", enforce_file_format=True)
    return uids


def tilted_series(folder: Path) -> list[str]:
    """The small sample CT as a DICOM series with standard axes, tilted by TILT_DEGREES."""
    array, ijk_to_ras = read_volume(require(SAMPLE_SMALL_CT))
    ijk_to_lps = LPS_TO_RAS @ ijk_to_ras  # the sample runs towards patient right and anterior
    depth, rows, columns = array.shape
    origin = ijk_to_lps[:3] @ [columns - 1, rows - 1, 0, 1]
    array = array[:, ::-1, ::-1]  # the same image towards patient left and posterior
    angle = np.deg2rad(TILT_DEGREES)
    rotation = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(rotation) @ np.diag(np.linalg.norm(ijk_to_lps[:3, :3], axis=0))
    matrix[:3, 3] = origin
    return write_ct_series(array, matrix, folder)


def with_tumour(app, result, input_node):
    """The result as if its segmentation had been corrected: a tumour ball inside the liver."""
    labels = slicer.util.arrayFromVolume(app.scene.GetNodeByID(result.labelmapNodeID)).copy()
    inside = np.argwhere(labels == 1)
    centre = inside[np.argmin(np.linalg.norm(inside - inside.mean(axis=0), axis=1))]
    grid = np.indices(labels.shape).transpose(1, 2, 3, 0)
    labels[(np.linalg.norm(grid - centre, axis=-1) <= 3) & (labels == 1)] = 2
    _, matrix = read_volume_node(input_node)
    labelmap = add_volume_from_array(app.scene, labels, matrix, "corrected labels", True)
    style_labelmap(app.scene, labelmap)  # its colour table names the segments
    logic = app.appLogic.GetModuleLogic("Segmentations")
    segmentation = add_segmentation(app.scene, logic, labelmap, input_node, "corrected")
    return dataclasses.replace(
        result, labelmapNodeID=labelmap.GetID(), segmentationNodeID=segmentation.GetID()
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A CT read from a DICOM series through volume_io, segmented and explained for real."""
    folder = tmp_path_factory.mktemp("dicom") / "series"
    uids = tilted_series(folder)
    app = create_headless_application()
    array, matrix = read_volume(folder)
    node = add_volume_from_array(app.scene, array, matrix, "CT from DICOM")
    result = LiverXAILogic(app.scene, app.appLogic).segmentAndExplain(
        node,
        model="unet-demo",
        uncertainty="none",  # a model that finds no tumour here
    )
    corrected = with_tumour(app, result, node)
    return SimpleNamespace(
        app=app, node=node, result=result, corrected=corrected, series=folder, uids=uids
    )


@pytest.fixture(scope="module")
def exported(case, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    steps = []
    paths = export_results(
        case.app.scene,
        case.node,
        case.corrected,
        out,
        FORMATS,
        stem="case 1",
        dicom_series_dir=case.series,
        progress=lambda fraction, message: steps.append(fraction),
    )
    return SimpleNamespace(out=out, paths=paths, steps=steps)


def test_every_format_is_written_once_and_nothing_else(exported):
    names = {
        "nifti": ["label", "gradcam_liver", "gradcam_tumor"],
        "nrrd": ["label", "gradcam_liver", "gradcam_tumor"],
        "stl": ["liver", "tumor"],
        "obj": ["liver", "tumor"],
    }
    suffixes = {"nifti": ".nii.gz", "nrrd": ".nrrd", "stl": ".stl", "obj": ".obj"}
    expected = {f: [f"case_1_{n}{suffixes[f]}" for n in ns] for f, ns in names.items()}
    expected["obj"] = [n for x in expected["obj"] for n in (x, x.replace(".obj", ".mtl"))]
    expected["dicom-seg"] = ["case_1_seg.dcm"]
    assert {f: [p.name for p in ps] for f, ps in exported.paths.items()} == expected
    written = sorted(p.name for ps in exported.paths.values() for p in ps)
    assert sorted(p.name for p in exported.out.iterdir()) == written  # no temporary files
    assert exported.steps == sorted(exported.steps) and exported.steps[-1] == 1.0


def test_volumes_read_back_with_the_nodes_geometry_and_values(case, exported):
    nodes = [case.corrected.labelmapNodeID, *case.corrected.explanationNodeIDs["gradcam"].values()]
    for file_format in ("nifti", "nrrd"):
        for path, node_id in zip(exported.paths[file_format], nodes, strict=True):
            array, matrix = read_volume(path)
            expected, expected_matrix = read_volume_node(case.app.scene.GetNodeByID(node_id))
            assert array.dtype == expected.dtype
            np.testing.assert_array_equal(array, expected)
            np.testing.assert_allclose(matrix, expected_matrix, atol=1e-4)
    label_matrix = read_volume(exported.paths["nrrd"][0])[1]
    np.testing.assert_allclose(label_matrix, read_volume_node(case.node)[1], atol=1e-4)
    rotation = label_matrix[:3, :3] / 3.0
    assert abs(rotation[1, 0]) == pytest.approx(np.sin(np.deg2rad(TILT_DEGREES)), abs=1e-5)


def read_surface(path: Path) -> vtk.vtkPolyData:
    reader = vtk.vtkSTLReader() if path.suffix == ".stl" else vtk.vtkOBJReader()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def lps_points(node, mask: np.ndarray) -> np.ndarray:
    """LPS positions of the centres of the voxels in a (K, J, I) mask."""
    _, matrix = read_volume_node(node)
    kji = np.argwhere(mask).astype(float)
    ijk = np.c_[kji[:, ::-1], np.ones(len(kji))]
    return (LPS_TO_RAS @ matrix @ ijk.T).T[:, :3]


def test_surfaces_parse_and_lie_on_their_segment_in_lps(case, exported):
    labels = slicer.util.arrayFromVolume(case.app.scene.GetNodeByID(case.corrected.labelmapNodeID))
    lps_to_ijk = np.linalg.inv(LPS_TO_RAS @ read_volume_node(case.node)[1])
    for path in exported.paths["stl"] + exported.paths["obj"][::2]:
        name = path.name.removeprefix("case_1_").split(".")[0]
        surface = read_surface(path)
        assert surface.GetNumberOfPolys() > 20, path.name
        points = numpy_support.vtk_to_numpy(surface.GetPoints().GetData()).astype(float)
        ijk = (lps_to_ijk @ np.c_[points, np.ones(len(points))].T).T[:, :3]
        # inside the CT's box (voxel edges), give or take half a voxel of surface smoothing
        assert (ijk.min(axis=0) >= -1.0).all(), path.name
        assert (ijk.max(axis=0) <= np.array(labels.shape[::-1]) - 1 + 1.0).all(), path.name
        voxels = lps_points(case.node, labels == (1 if name == "liver" else 2))
        # and on its segment: the bounds of the surface and of the voxels agree (not RAS)
        np.testing.assert_allclose(points.min(axis=0), voxels.min(axis=0), atol=4.5)
        np.testing.assert_allclose(points.max(axis=0), voxels.max(axis=0), atol=4.5)
    header = exported.paths["stl"][0].read_bytes()[:80]
    assert b"SPACE=LPS" in header
    obj_text = exported.paths["obj"][0].read_text()
    assert "SPACE=LPS" in obj_text.splitlines()[0]
    assert "mtllib case_1_liver.mtl" in obj_text


def source_order(series: Path) -> list[str]:
    """The series' files in the slice order SimpleITK (and so the CT node) reads them."""
    reader = sitk.ImageSeriesReader()
    return list(reader.GetGDCMSeriesFileNames(str(series)))


def test_dicom_seg_references_the_source_and_matches_the_masks_slice_by_slice(case, exported):
    import highdicom as hd

    (path,) = exported.paths["dicom-seg"]
    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_order(case.series)]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    (referenced_series,) = seg.ReferencedSeriesSequence
    assert referenced_series.SeriesInstanceUID == sources[0].SeriesInstanceUID
    referenced = {
        item.ReferencedSOPInstanceUID for item in referenced_series.ReferencedInstanceSequence
    }
    assert referenced == set(case.uids)

    labels = slicer.util.arrayFromVolume(case.app.scene.GetNodeByID(case.corrected.labelmapNodeID))
    assert (labels == 2).sum() > 10
    for number, name in enumerate(("liver", "tumor"), start=1):
        segment = seg.SegmentSequence[number - 1]
        term = SEGMENT_TERMS[name]
        assert (segment.SegmentNumber, segment.SegmentLabel) == (number, name)
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        assert segment.SegmentAlgorithmName == "LiverXAI unet-demo"
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        kind = segment.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", term.category.value)
        assert (kind.CodingSchemeDesignator, kind.CodeValue, kind.CodeMeaning) == (
            "SCT",
            term.type.value,
            term.type.meaning,
        )
    assert seg.SegmentSequence[1].AnatomicRegionSequence[0].CodeValue == "10200004"

    # Frame by frame, from the raw file: each frame names its source instance and segment.
    slice_of = {ds.SOPInstanceUID: k for k, ds in enumerate(sources)}
    seen = set()
    for frame, item in zip(seg.pixel_array, seg.PerFrameFunctionalGroupsSequence, strict=True):
        source = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        np.testing.assert_array_equal(frame, labels[slice_of[source]] == number)
        seen.add((slice_of[source], number))
    expected = {(k, v) for k in range(labels.shape[0]) for v in (1, 2) if (labels[k] == v).any()}
    assert seen == expected  # every non-empty slice of each segment, no other

    # And through highdicom's reader, by source instance.
    pixels = hd.seg.segread(path).get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in sources], [1, 2], assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(pixels, np.stack([labels == 1, labels == 2], axis=-1))


def test_the_uncorrected_result_has_no_tumour_surface_and_an_empty_tumour_segment(case, tmp_path):
    labels = slicer.util.arrayFromVolume(case.app.scene.GetNodeByID(case.result.labelmapNodeID))
    assert not (labels == 2).any()  # the demo model finds no tumour in this CT
    paths = export_results(
        case.app.scene,
        None,
        case.result,
        tmp_path,
        ["stl", "dicom-seg"],
        dicom_series_dir=case.series,
    )
    assert [p.name for p in paths["stl"]] == ["CT_from_DICOM_liver.stl"]
    seg = pydicom.dcmread(paths["dicom-seg"][0])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumor"]
    numbers = {
        f.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert numbers == {1}


def test_unknown_formats_are_named_with_the_choices(case, tmp_path):
    assert check_formats(["NIfTI", "stl", "nifti"]) == ("nifti", "stl")
    with pytest.raises(ExportError, match=r"\['png'\]: choose from \['nifti', 'nrrd', 'stl'"):
        export_results(case.app.scene, case.node, case.result, tmp_path, ["nifti", "png"])
    with pytest.raises(ExportError, match="No export format"):
        check_formats([])
    assert list(tmp_path.iterdir()) == []
    assert safe_stem("CT 3: liver/arterial") == "CT_3_liver_arterial"


def test_a_failed_write_leaves_no_partial_file_and_keeps_the_old_one(case, tmp_path, monkeypatch):
    scene, node, result = case.app.scene, case.node, case.corrected
    export_results(scene, node, result, tmp_path, "dicom-seg", dicom_series_dir=case.series)
    seg_path = tmp_path / "CT_from_DICOM_seg.dcm"
    before = seg_path.read_bytes()

    def disk_full(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"DICM partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(pydicom.Dataset, "save_as", disk_full)
    with pytest.raises(OSError, match="No space"):
        export_results(scene, node, result, tmp_path, "dicom-seg", dicom_series_dir=case.series)
    monkeypatch.undo()
    assert seg_path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [seg_path.name]

    (tmp_path / "CT_from_DICOM_liver.stl").mkdir()  # the name is taken: the rename fails
    with pytest.raises(OSError):
        export_results(scene, node, result, tmp_path, ["stl"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [seg_path.name, "CT_from_DICOM_liver.stl"]
    )


def test_every_volume_of_a_result_gets_a_file_name(case):
    result = dataclasses.replace(case.result, uncertaintyNodeID="vtkMRMLScalarVolumeNode9")
    assert list(volume_node_ids(result, "ct")) == [
        "ct_label",
        "ct_gradcam_liver",
        "ct_gradcam_tumor",
        "ct_uncertainty",
    ]
