"""Segment & Explain on a real MRML scene (slicer-core) with the bundled demo model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import slicer.util
from conftest import IRCADB_CT, SAMPLE_SMALL_CT, load_volume_node, restored
from LiverXAILib.errors import Cancelled, CheckpointError, InputError, NotHounsfieldError
from LiverXAILib.segment.orientation import canonical_orientation
from LiverXAILib.slicer.logic import LiverXAILogic
from LiverXAILib.slicer.results import review_item_slices
from LiverXAILib.slicer.scene import add_volume_from_array, ijk_to_ras_array, read_volume_node


def geometry(node):
    return ijk_to_ras_array(node), node.GetImageData().GetDimensions()


def assert_same_geometry(output, reference):
    matrix, dimensions = geometry(output)
    reference_matrix, reference_dimensions = geometry(reference)
    np.testing.assert_array_equal(matrix, reference_matrix)  # exact: origin, spacing, axes
    assert dimensions == reference_dimensions
    assert output.GetSpacing() == reference.GetSpacing()
    assert output.GetOrigin() == reference.GetOrigin()


def box_corners(node):
    """RAS of the outer corners of the voxel grid (voxel edges, not centres)."""
    matrix, (columns, rows, slices) = geometry(node)
    corners = [
        (i, j, k)
        for i in (-0.5, columns - 0.5)
        for j in (-0.5, rows - 0.5)
        for k in (-0.5, slices - 0.5)
    ]
    return np.array([(matrix @ np.array([*c, 1.0]))[:3] for c in corners])


def assert_map_grid(output, reference, map_size=(128, 128)):
    """Explanation maps: the network's size in plane, every slice, the reference's box."""
    dimensions = output.GetImageData().GetDimensions()
    reference_dimensions = geometry(reference)[1]
    assert sorted(dimensions) == sorted([*map_size, min(reference_dimensions)])
    corners = sorted(map(tuple, np.round(box_corners(output), 6)))
    np.testing.assert_allclose(corners, sorted(map(tuple, np.round(box_corners(reference), 6))))


@pytest.fixture
def sample(headless):
    node = load_volume_node(headless, SAMPLE_SMALL_CT, "sample")
    return headless, node, LiverXAILogic(headless.scene, headless.appLogic)


def test_outputs_have_the_input_geometry_and_expected_content(sample):
    app, node, logic = sample
    before = slicer.util.arrayFromVolume(node).copy()
    matrix_before = ijk_to_ras_array(node)
    result = logic.segmentAndExplain(node)

    labelmap = app.scene.GetNodeByID(result.labelmapNodeID)
    assert labelmap.IsA("vtkMRMLLabelMapVolumeNode")
    assert_same_geometry(labelmap, node)
    labels = slicer.util.arrayFromVolume(labelmap)
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels == 1).sum() > 1000
    colors = labelmap.GetDisplayNode().GetColorNode()
    assert [colors.GetColorName(i) for i in range(3)] == ["background", "liver", "tumor"]

    assert set(result.heatmapNodeIDs) == {"liver", "tumor"}
    for node_id in result.heatmapNodeIDs.values():
        heatmap = app.scene.GetNodeByID(node_id)
        assert heatmap.IsA("vtkMRMLScalarVolumeNode") and not heatmap.IsA(
            "vtkMRMLLabelMapVolumeNode"
        )
        assert_map_grid(heatmap, node)
        values = slicer.util.arrayFromVolume(heatmap)
        assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= 1
        display = heatmap.GetDisplayNode()
        assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
        assert (display.GetWindow(), display.GetLevel()) == (1.0, 0.5)
        assert "once per volume" in heatmap.GetDescription()
    liver_heat = slicer.util.arrayFromVolume(app.scene.GetNodeByID(result.heatmapNodeIDs["liver"]))
    assert liver_heat.max() == pytest.approx(1.0)

    segmentation_node = app.scene.GetNodeByID(result.segmentationNodeID)
    segmentation = segmentation_node.GetSegmentation()
    names = [
        segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())
    ]
    assert sorted(names) == ["liver", "tumor"]
    assert segmentation.ContainsRepresentation("Closed surface")
    liver = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("liver"))
    assert liver.GetColor() == pytest.approx((0.87, 0.60, 0.47))
    surface = liver.GetRepresentation("Closed surface")
    assert surface is not None and surface.GetNumberOfPoints() > 100

    assert result.liverVolumeMl == pytest.approx((labels >= 1).sum() * 27 / 1000, rel=1e-6)
    assert result.timings["total"] > 0 and "CPU" in result.device
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    np.testing.assert_array_equal(ijk_to_ras_array(node), matrix_before)


def test_a_reoriented_copy_gets_the_same_segmentation_in_physical_space(sample):
    app, node, logic = sample
    array, matrix = read_volume_node(node)
    copy_array, copy_matrix = restored(array, matrix, (2, 0, 1), (True, False, True))
    copy = add_volume_from_array(app.scene, copy_array, copy_matrix, "reoriented")
    original = logic.segmentAndExplain(node, explainClasses=["liver"])
    other = logic.segmentAndExplain(copy, explainClasses=["liver"])
    labelmap = app.scene.GetNodeByID(other.labelmapNodeID)
    assert_same_geometry(labelmap, copy)
    heatmaps = [app.scene.GetNodeByID(r.heatmapNodeIDs["liver"]) for r in (original, other)]
    assert_map_grid(heatmaps[1], copy)
    first_map, second_map = (read_volume_node(h) for h in heatmaps)
    np.testing.assert_allclose(  # the same map, in the same physical place
        canonical_orientation(first_map[1]).apply(first_map[0]),
        canonical_orientation(second_map[1]).apply(second_map[0]),
        atol=1e-5,
    )
    first = slicer.util.arrayFromVolume(app.scene.GetNodeByID(original.labelmapNodeID))
    second = slicer.util.arrayFromVolume(labelmap)
    np.testing.assert_array_equal(
        canonical_orientation(matrix).apply(first), canonical_orientation(copy_matrix).apply(second)
    )
    assert other.liverVolumeMl == pytest.approx(original.liverVolumeMl)


def test_cancel_before_and_during_the_run_leaves_the_scene_as_it_was(sample):
    app, node, logic = sample
    count = app.scene.GetNumberOfNodes()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        logic.segmentAndExplain(node, cancelEvent=cancel)
    assert app.scene.GetNumberOfNodes() == count

    cancel = threading.Event()
    seen = []

    def cancel_after_first_batch(fraction, message):
        seen.append(message)
        if message.startswith("slice"):
            cancel.set()

    with pytest.raises(Cancelled):
        logic.segmentAndExplain(
            node, batchSize=4, progressCallback=cancel_after_first_batch, cancelEvent=cancel
        )
    assert app.scene.GetNumberOfNodes() == count
    assert sum(message.startswith("slice") for message in seen) == 1


def test_a_failure_while_adding_nodes_removes_the_nodes_made_so_far(sample):
    app, node, _ = sample
    app_logic_without_segmentations = slicer.vtkSlicerApplicationLogic()
    app_logic_without_segmentations.SetMRMLScene(app.scene)
    logic = LiverXAILogic(app.scene, app_logic_without_segmentations)
    count = app.scene.GetNumberOfNodes()
    with pytest.raises(RuntimeError, match="Segmentations module logic"):
        logic.segmentAndExplain(node)
    assert app.scene.GetNumberOfNodes() == count


def make_node(app, array, spacing=(1.0, 1.0, 1.0)):
    matrix = np.diag([-spacing[2], -spacing[1], spacing[0], 1.0])
    return add_volume_from_array(app.scene, array, matrix, "bad")


def ct_like(shape=(8, 32, 32)):
    array = np.full(shape, -1000, dtype=np.int16)
    array[:, 8:24, 8:24] = 50
    array[:, 14:18, 14:18] = 400  # bone
    return array


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("none", InputError, "No input volume selected"),
        ("2d", InputError, "2D image"),
        ("vector", InputError, "values per voxel"),
        ("empty", InputError, "empty"),
        ("constant", InputError, "constant"),
        ("not_hu", NotHounsfieldError, "Hounsfield"),
        ("all_nan", InputError, "NaN"),
        ("sheared", InputError, "not perpendicular"),
        ("batch_zero", ValueError, "batchSize"),
        ("missing_model", CheckpointError, "not found"),
        ("corrupt_model", CheckpointError, "not a readable"),
        ("unknown_model", CheckpointError, "Unknown model"),
    ],
)
def test_bad_input_gives_a_clear_error_and_adds_nothing(headless, tmp_path, case, error, message):
    app = headless
    logic = LiverXAILogic(app.scene, app.appLogic)
    model = "unet-demo"
    node = make_node(app, ct_like())
    if case == "none":
        node = None
    elif case == "2d":
        node = make_node(app, ct_like((1, 32, 32)))
    elif case == "vector":
        node = app.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
        slicer.util.updateVolumeFromArray(node, np.zeros((4, 8, 8, 3), dtype=np.uint8))
    elif case == "empty":
        node = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    elif case == "constant":
        node = make_node(app, np.full((4, 8, 8), 7, dtype=np.int16))
    elif case == "not_hu":
        node = make_node(app, (np.arange(8 * 32 * 32) % 256).reshape(8, 32, 32).astype(np.uint8))
    elif case == "all_nan":
        node = make_node(app, np.full((4, 8, 8), np.nan, dtype=np.float32))
    elif case == "sheared":
        matrix = np.diag([-1.0, -1.0, 2.5, 1.0])
        matrix[1, 2] = 0.8  # slices shifted towards anterior: a gantry tilt
        node = add_volume_from_array(app.scene, ct_like(), matrix, "tilted")
    elif case == "missing_model":
        model = str(tmp_path / "absent.pt")
    elif case == "corrupt_model":
        (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02not a checkpoint")
        model = str(tmp_path / "corrupt.pt")
    elif case == "unknown_model":
        model = "no-such-model"
    options = {"batchSize": 0} if case == "batch_zero" else {}
    count = app.scene.GetNumberOfNodes()
    with pytest.raises(error, match=message):
        logic.segmentAndExplain(node, model=model, **options)
    assert app.scene.GetNumberOfNodes() == count


def test_a_few_nan_voxels_run_with_a_warning_and_the_node_keeps_them(headless):
    logic = LiverXAILogic(headless.scene, headless.appLogic)
    array = ct_like().astype(np.float32)
    array[:, :2, :] = np.nan
    node = make_node(headless, array, spacing=(2.5, 0.8, 0.8))
    result = logic.segmentAndExplain(node, explainClasses=[], uncertainty="none")
    assert any("NaN" in text and "-1000" in text for text in result.warnings)
    assert "Warning:" in result.summary()
    kept = slicer.util.arrayFromVolume(node)
    assert np.isnan(kept[:, :2, :]).all() and np.array_equal(kept[:, 2:], array[:, 2:])


def test_non_hounsfield_input_runs_when_the_user_insists(headless):
    logic = LiverXAILogic(headless.scene, headless.appLogic)
    node = make_node(headless, (np.arange(8 * 32 * 32) % 256).reshape(8, 32, 32).astype(np.uint8))
    result = logic.segmentAndExplain(node, allowNonHU=True, explainClasses=[])
    assert result.heatmapNodeIDs == {}
    assert headless.scene.GetNodeByID(result.labelmapNodeID) is not None


def test_unknown_class_to_explain_is_refused(sample):
    _, node, logic = sample
    with pytest.raises(ValueError, match="Cannot explain"):
        logic.segmentAndExplain(node, explainClasses=["spleen"])


@pytest.mark.slow
def test_ircadb_outputs_have_exactly_its_geometry_and_the_input_is_untouched(headless):
    node = load_volume_node(headless, IRCADB_CT, "ircadb17")
    before = slicer.util.arrayFromVolume(node).copy()
    matrix_before = ijk_to_ras_array(node)
    logic = LiverXAILogic(headless.scene, headless.appLogic)
    result = logic.segmentAndExplain(node, explainClasses=["liver"])
    assert_same_geometry(headless.scene.GetNodeByID(result.labelmapNodeID), node)
    for node_id in [*result.heatmapNodeIDs.values(), result.uncertaintyNodeID]:
        assert_map_grid(headless.scene.GetNodeByID(node_id), node)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    np.testing.assert_array_equal(ijk_to_ras_array(node), matrix_before)
    assert node.GetName() == "ircadb17"


def test_outputs_follow_the_inputs_parent_transform(sample):
    app, node, logic = sample
    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    node.SetAndObserveTransformNodeID(transform.GetID())
    result = logic.segmentAndExplain(node, explainClasses=["liver"])
    for node_id in [
        result.labelmapNodeID,
        result.segmentationNodeID,
        *result.heatmapNodeIDs.values(),
    ]:
        assert app.scene.GetNodeByID(node_id).GetTransformNodeID() == transform.GetID()


def test_methods_uncertainty_quality_and_review_list(sample, tmp_path):
    app, node, logic = sample
    result = logic.segmentAndExplain(
        node, explainMethods=["gradcam", "gradcam++"], uncertainty="tta", camLayer="decoder.2"
    )
    assert set(result.explanationNodeIDs) == {"gradcam", "gradcam++"}
    assert result.heatmapNodeIDs == result.explanationNodeIDs["gradcam"]
    plus = app.scene.GetNodeByID(result.explanationNodeIDs["gradcam++"]["liver"])
    assert plus.GetName() == "sample Grad-CAM++ liver" and "Grad-CAM++" in plus.GetDescription()
    assert_map_grid(plus, node)

    uncertainty = app.scene.GetNodeByID(result.uncertaintyNodeID)
    assert_map_grid(uncertainty, node)
    values = slicer.util.arrayFromVolume(uncertainty)
    assert values.dtype == np.float32 and 0 <= values.min() and values.max() <= 1
    assert values.max() > 0.1  # somewhere (the liver's border) the network is unsure
    assert "entropy" in uncertainty.GetDescription()
    assert result.uncertaintyMethod.startswith("test-time augmentation")

    quality = result.explanationQuality
    assert quality["methods"]["gradcam"]["layer"] == "decoder.2"
    assert quality["methods"]["gradcam"]["sanity"].startswith(("passed", "FAILS"))
    liver = quality["perClass"]["gradcam"]["liver"]
    assert 0 < liver["insideFraction"] <= 1 and 0 <= liver["pointingGameHitRate"] <= 1
    assert liver["slicesExplained"] > 0
    (agreement,) = [a for a in quality["agreement"] if a["class"] == "liver"]
    assert agreement["methods"] == ["gradcam", "gradcam++"] and -1 <= agreement["spearman"] <= 1
    assert 0 <= quality["uncertainty"]["meanInLiver"] <= 1
    severities = [item["severity"] for item in result.reviewItems]
    assert severities == sorted(severities, reverse=True)
    depth = slicer.util.arrayFromVolume(node).shape[0]
    for item in result.reviewItems:
        assert item["reason"] and 0 <= item["slice"] < depth
    covered = (s for item in result.reviewItems for s in review_item_slices(item))
    assert result.reviewSlices == list(dict.fromkeys(covered))  # merged items: their range
    for lesion in result.lesions:
        assert 0 <= lesion["confidence"] <= 1 and lesion["longest_axial_diameter_mm"] >= 0

    html = logic.writeReport(result, node, tmp_path)
    assert html.name == "sample_report.html" and (tmp_path / "sample_report.json").exists()
    text = html.read_text()
    assert "data:image/png;base64," in text and "Grad-CAM++" in text


def test_review_slice_jump_moves_the_slice_views_to_that_slice(sample):
    app, node, logic = sample
    slice_node = app.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetLayoutName("Red")
    slice_node.SetOrientationToAxial()
    array, matrix = read_volume_node(node)
    orientation = canonical_orientation(matrix)
    depth = orientation.canonical_shape(array.shape)[0]
    for canonical_slice in (0, depth // 2, depth - 1):
        r, a, s = logic.jumpToSlice(node, canonical_slice)
        k, j, i = orientation.array_index(
            (canonical_slice, 0, 0), orientation.canonical_shape(array.shape)
        )
        expected_s = (matrix @ np.array([i, j, k, 1.0]))[2]
        assert s == pytest.approx(expected_s)
        assert slice_node.GetSliceToRAS().GetElement(2, 3) == pytest.approx(s)


def test_unknown_explanation_method_or_uncertainty_is_named_before_anything_runs(sample):
    app, node, logic = sample
    before = app.scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="occlusion"):
        logic.segmentAndExplain(node, explainMethods=["occlusion"])
    with pytest.raises(ValueError, match="no dropout"):
        logic.segmentAndExplain(node, uncertainty="mc-dropout")
    assert app.scene.GetNumberOfNodes() == before


def test_report_and_files_come_from_the_results_arrays_not_the_scene(sample, tmp_path):
    """Files are written from what the run produced: removing (or editing) the output nodes
    afterwards does not change them."""
    from LiverXAILib.io.result_files import write_reports

    app, node, logic = sample
    result = logic.segmentAndExplain(node, explainClasses=["liver"], uncertainty="none")
    arrays = result.arrays
    labelmap = app.scene.GetNodeByID(result.labelmapNodeID)
    np.testing.assert_array_equal(arrays.input_order(arrays.labels), read_volume_node(labelmap)[0])
    heatmap = app.scene.GetNodeByID(result.explanationNodeIDs["gradcam"]["liver"])
    map_values = arrays.heatmaps["gradcam"]["liver"]
    np.testing.assert_array_equal(arrays.input_order(map_values), read_volume_node(heatmap)[0])
    np.testing.assert_allclose(arrays.map_ijk_to_ras(map_values), ijk_to_ras_array(heatmap))
    for node_id in (result.labelmapNodeID, *result.heatmapNodeIDs.values()):
        app.scene.RemoveNode(app.scene.GetNodeByID(node_id))
    html = write_reports(result, read_volume_node(node)[0], tmp_path, "case")
    assert html.is_file() and (tmp_path / "case_report.json").is_file()
    assert "arrays" not in result.to_dict()
