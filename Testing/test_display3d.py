"""The result in 3D, its terminology, its place in the subject hierarchy, and re-runs.

All on a real MRML scene from slicer-core with the bundled demo model and a real CT.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import slicer
import slicer.util
from conftest import SAMPLE_SMALL_CT, load_volume_node
from LiverXAILib.constants import CLASS_COLORS, DEFAULT_MODEL
from LiverXAILib.slicer.display3d import CT_PRESET_FILE, LABEL_OPACITY, volume_rendering_display
from LiverXAILib.slicer.logic import LiverXAILogic
from LiverXAILib.slicer.previous_results import INPUT_ATTRIBUTE, subject_hierarchy
from LiverXAILib.slicer.render3d import offscreen_rendering_available, render_3d_view
from LiverXAILib.slicer.scene import ijk_to_ras_array
from LiverXAILib.slicer.terminology import SEGMENT_TERMS
from PIL import Image

FAST = {"uncertainty": "none", "explainClasses": ["liver"]}


@pytest.fixture
def sample(headless):
    node = load_volume_node(headless, SAMPLE_SMALL_CT, "sample")
    return headless, node, LiverXAILogic(headless.scene, headless.appLogic)


def node_ids(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def test_labels_are_volume_rendered_liver_faint_tumour_bright_and_surfaces_are_the_switch(sample):
    app, node, logic = sample
    result = logic.segmentAndExplain(node, **FAST)
    labelmap = app.scene.GetNodeByID(result.labelmapNodeID)
    segmentation = app.scene.GetNodeByID(result.segmentationNodeID)
    rendering = volume_rendering_display(labelmap)
    assert rendering is not None and rendering.GetID() == result.volumeRenderingNodeID
    assert rendering.GetVisibility()
    assert not segmentation.GetDisplayNode().GetVisibility3D()  # one 3D display at a time
    volume_property = rendering.GetVolumePropertyNode().GetVolumeProperty()
    assert volume_property.GetInterpolationType() == 0  # nearest: labels never blend
    colors, opacity = volume_property.GetRGBTransferFunction(), volume_property.GetScalarOpacity()
    for value, name in enumerate(("background", "liver", "tumor")):
        np.testing.assert_allclose(colors.GetColor(value), CLASS_COLORS[name])
        assert opacity.GetValue(value) == pytest.approx(LABEL_OPACITY[name])
    assert opacity.GetValue(0) == 0 < opacity.GetValue(1) < opacity.GetValue(2)
    # flat steps around each label value: no ramp blending liver into tumour
    assert opacity.GetValue(1.4) == pytest.approx(opacity.GetValue(1))
    assert opacity.GetValue(1.6) == pytest.approx(opacity.GetValue(2))

    logic.setVolumeRendering(result, False)
    assert not rendering.GetVisibility() and segmentation.GetDisplayNode().GetVisibility3D()
    logic.setVolumeRendering(result, True)
    assert rendering.GetVisibility() and not segmentation.GetDisplayNode().GetVisibility3D()
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")


def test_surfaces_only_when_volume_rendering_is_off(sample):
    app, node, logic = sample
    result = logic.segmentAndExplain(node, volumeRendering=False, **FAST)
    labelmap = app.scene.GetNodeByID(result.labelmapNodeID)
    assert volume_rendering_display(labelmap) is None and result.volumeRenderingNodeID == ""
    segmentation = app.scene.GetNodeByID(result.segmentationNodeID)
    assert segmentation.GetDisplayNode().GetVisibility3D()


def test_ct_volume_rendering_uses_the_shipped_preset_and_leaves_the_voxels_alone(sample):
    app, node, logic = sample
    before = slicer.util.arrayFromVolume(node).copy()
    # the user's own rendering of the CT, which LiverXAI must neither change nor remove
    users = app.appLogic.GetModuleLogic("VolumeRendering").CreateDefaultVolumeRenderingNodes(node)
    users_opacity = users.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    users_points = users_opacity.GetSize()
    storage_before = app.scene.GetNumberOfNodesByClass("vtkMRMLVolumePropertyStorageNode")
    result = logic.segmentAndExplain(node, ctVolumeRendering=True, **FAST)
    renderings = [
        node.GetNthDisplayNode(i)
        for i in range(node.GetNumberOfDisplayNodes())
        if node.GetNthDisplayNode(i).IsA("vtkMRMLVolumeRenderingDisplayNode")
    ]
    assert len(renderings) == 2 and renderings[0] is users
    assert users_opacity.GetSize() == users_points  # untouched
    ct_rendering = renderings[1]
    assert ct_rendering.GetVisibility()
    # the preset was read through a storage node that must not stay in the scene
    assert app.scene.GetNumberOfNodesByClass("vtkMRMLVolumePropertyStorageNode") == storage_before
    opacity = ct_rendering.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    preset_points = CT_PRESET_FILE.read_text().splitlines()[6].split()
    assert opacity.GetSize() == int(preset_points[0]) // 2
    assert opacity.GetValue(-500) == 0.0 and opacity.GetValue(150) > 0.0  # air clear, tissue
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    # replacing the run removes LiverXAI's CT rendering, not the user's
    logic.segmentAndExplain(node, existingResults="replace", **FAST)
    assert users.GetScene() is not None and ct_rendering.GetScene() is None
    assert app.scene.GetNodeByID(result.labelmapNodeID) is None


def test_segments_carry_snomed_codes_that_slicer_reads_back(sample):
    app, node, logic = sample
    result = logic.segmentAndExplain(node, **FAST)
    segmentation = app.scene.GetNodeByID(result.segmentationNodeID).GetSegmentation()
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    expected = {
        "liver": ("123037004", "10200004", ""),
        "tumor": ("49755003", "4147007", "10200004"),
    }
    for name, (category, type_, region) in expected.items():
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        assert segment.GetTerminology() == SEGMENT_TERMS[name].slicer_entry()
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminologies.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetCategoryObject().GetCodeValue() == category
        assert entry.GetCategoryObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeValue() == type_
        assert (entry.GetAnatomicRegionObject().GetCodeValue() or "") == region


def test_outputs_go_into_one_folder_under_the_inputs_study(sample):
    app, node, logic = sample
    hierarchy = subject_hierarchy(app.scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient 1")
    study = hierarchy.CreateStudyItem(patient, "CT abdomen")
    hierarchy.CreateItem(study, node)
    result = logic.segmentAndExplain(node, **FAST)
    folder = result.resultFolderItemID
    assert hierarchy.GetItemParent(folder) == study
    assert result.run in hierarchy.GetItemName(folder)
    outputs = [
        result.labelmapNodeID,
        result.segmentationNodeID,
        *result.heatmapNodeIDs.values(),
    ]
    for node_id in outputs:
        item = hierarchy.GetItemByDataNode(app.scene.GetNodeByID(node_id))
        assert hierarchy.GetItemParent(item) == folder


def test_without_a_study_the_folder_sits_beside_the_input(sample):
    app, node, logic = sample
    result = logic.segmentAndExplain(node, **FAST)
    hierarchy = subject_hierarchy(app.scene)
    assert hierarchy.GetItemParent(result.resultFolderItemID) == hierarchy.GetSceneItemID()


def test_descriptions_name_the_model_and_the_date(sample):
    app, node, logic = sample
    result = logic.segmentAndExplain(node, **FAST)
    model = re.escape(DEFAULT_MODEL)
    assert re.fullmatch(model + r", \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", result.run)
    for node_id in [result.labelmapNodeID, result.segmentationNodeID, result.uncertaintyNodeID]:
        if node_id:
            description = app.scene.GetNodeByID(node_id).GetDescription()
            assert f"by model {DEFAULT_MODEL}, {result.created}" in description
    for node_id in result.heatmapNodeIDs.values():
        assert DEFAULT_MODEL in app.scene.GetNodeByID(node_id).GetDescription()


def test_a_rerun_keeps_both_with_unique_names_or_replaces_the_first(sample):
    app, node, logic = sample
    before = node_ids(app.scene)
    first = logic.segmentAndExplain(node, **FAST)
    after_first = node_ids(app.scene)
    second = logic.segmentAndExplain(node, existingResults="keep", **FAST)
    assert logic.previousResults(node) == [first.run, second.run]
    names = [app.scene.GetNodeByID(r.labelmapNodeID).GetName() for r in (first, second)]
    assert names[0] != names[1]

    third = logic.segmentAndExplain(node, existingResults="replace", **FAST)
    assert logic.previousResults(node) == [third.run]
    for old in (first, second):
        assert app.scene.GetNodeByID(old.labelmapNodeID) is None
        assert app.scene.GetNodeByID(old.volumeRenderingNodeID) is None
        assert not subject_hierarchy(app.scene).GetItemName(old.resultFolderItemID)
    # the display, property and colour nodes of replaced runs are gone too
    assert len(node_ids(app.scene)) == len(after_first)
    assert before < node_ids(app.scene)
    with pytest.raises(ValueError, match="existingResults"):
        logic.segmentAndExplain(node, existingResults="overwrite", **FAST)


def test_a_failed_replace_keeps_the_previous_results(sample):
    app, node, logic = sample
    first = logic.segmentAndExplain(node, **FAST)
    count = app.scene.GetNumberOfNodes()
    broken = slicer.vtkSlicerApplicationLogic()  # no Segmentations logic: adding nodes fails
    broken.SetMRMLScene(app.scene)
    with pytest.raises(RuntimeError, match="Segmentations module logic"):
        LiverXAILogic(app.scene, broken).segmentAndExplain(node, existingResults="replace", **FAST)
    assert app.scene.GetNumberOfNodes() == count
    assert app.scene.GetNodeByID(first.labelmapNodeID) is not None
    assert logic.previousResults(node) == [first.run]


def test_the_3d_view_is_centred_on_the_liver_from_the_front(sample):
    app, node, logic = sample
    camera = app.scene.AddNewNodeByClass("vtkMRMLCameraNode")  # as a Slicer 3D view has
    result = logic.segmentAndExplain(node, **FAST)
    segmentation = app.scene.GetNodeByID(result.segmentationNodeID)
    labels = slicer.util.arrayFromVolume(app.scene.GetNodeByID(result.labelmapNodeID))
    k, j, i = np.nonzero(labels == 1)
    ras = ijk_to_ras_array(node) @ np.stack([i, j, k, np.ones_like(i)]).astype(float)
    liver_box_centre = (ras[:3].min(axis=1) + ras[:3].max(axis=1)) / 2
    np.testing.assert_allclose(camera.GetFocalPoint(), liver_box_centre, atol=4.0)  # 3 mm voxels
    assert camera.GetPosition()[1] > camera.GetFocalPoint()[1]  # anterior of the liver
    assert camera.GetViewUp() == pytest.approx((0.0, 0.0, 1.0))
    assert segmentation.GetAttribute(INPUT_ATTRIBUTE) == node.GetID()


@pytest.mark.skipif(bool(offscreen_rendering_available()), reason="no offscreen OpenGL here")
def test_offscreen_render_shows_the_liver_and_leaves_the_scene_as_it_was(sample, tmp_path):
    app, node, logic = sample
    result = logic.segmentAndExplain(node, volumeRendering=False, **FAST)
    ids = node_ids(app.scene)
    path = render_3d_view(app.scene, app.appLogic, tmp_path / "view.png", size=(320, 320))
    assert node_ids(app.scene) == ids
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(float) / 255
    liver = np.array(CLASS_COLORS["liver"])
    # shaded surface: hue of the liver colour (red > green > blue) on a good part of the image
    warm = (pixels[..., 0] > pixels[..., 1] + 0.1) & (pixels[..., 1] > pixels[..., 2])
    assert warm.mean() > 0.02, f"liver colour {liver} not found in the render"
    assert result.segmentationNodeID
