"""End to end on real CT: the headless commands, their files, and what the demo model does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import IRCADB_CT, IRCADB_LABEL, ROOT, require
from LiverXAILib.evaluation.metrics import per_case_dice
from LiverXAILib.explain.methods import attribute
from LiverXAILib.io.volumes import read_volume
from LiverXAILib.models.catalog import resolve_model
from LiverXAILib.models.checkpoints import load_checkpoint
from LiverXAILib.segment.map_grid import labels_on_map_grid
from LiverXAILib.segment.orientation import canonical_orientation
from LiverXAILib.segment.preprocessing import SliceInputSpec

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "LiverXAI"))
    return subprocess.run(
        [sys.executable, "-m", "LiverXAILib", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=900,
    )


@pytest.fixture(scope="module")
def ircadb_outputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("ircadb")
    case = work / "ircadb17.nii.gz"
    shutil.copyfile(require(IRCADB_CT), case)  # never touch the shared original
    out = work / "out"
    completed = run_cli("segment", str(case), "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    return case, out, completed.stdout


def same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-6)


def box_corners(image) -> np.ndarray:
    """Physical positions of the outer corners of an image's voxel grid."""
    sizes = image.GetSize()
    corners = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    return np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint(
                [c * n - 0.5 for c, n in zip(corner, sizes, strict=True)]
            )
            for corner in corners
        ]
    )


def test_segment_writes_every_output_with_the_input_geometry(ircadb_outputs):
    case, out, _ = ircadb_outputs
    stem = "ircadb17"
    expected = [
        f"{stem}_label.nii.gz",
        f"{stem}_gradcam_liver.nii.gz",
        f"{stem}_gradcam_tumor.nii.gz",
        f"{stem}.seg.nrrd",
        f"{stem}_report.json",
        f"{stem}_overview.png",
        f"{stem}_uncertainty.nii.gz",
        f"{stem}_report.html",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    reference = sitk.ReadImage(str(case))
    same_geometry(sitk.ReadImage(str(out / expected[0])), reference)
    for name in (expected[1], expected[2], expected[6]):  # maps: 128 x 128 grid, same box
        image = sitk.ReadImage(str(out / name))
        assert image.GetSize() == (128, 128, reference.GetSize()[2])
        np.testing.assert_allclose(box_corners(image), box_corners(reference), atol=1e-3)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / expected[0])))
    assert set(np.unique(labels)) <= {0, 1, 2}
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out / expected[1])))
    assert heat.dtype == np.float32 and 0 <= heat.min() and heat.max() == pytest.approx(1.0)
    segmentation = sitk.ReadImage(str(out / expected[3]))
    names = {
        segmentation.GetMetaData(k) for k in segmentation.GetMetaDataKeys() if k.endswith("_Name")
    }
    assert names == {"liver", "tumor"}
    report = json.loads((out / expected[4]).read_text())
    for key in ("liverVolumeMl", "tumorVolumeMl", "tumorCount", "modelName", "device", "timings"):
        assert key in report
    assert report["liverVolumeMl"] == pytest.approx(
        (labels >= 1).sum() * np.prod(reference.GetSpacing()) / 1000, rel=1e-6
    )
    assert report["modelInfo"]["architecture"] == "unet"
    png = (out / expected[5]).read_bytes()
    assert png.startswith(b"\x89PNG")
    html = (out / expected[7]).read_text()
    assert "data:image/png;base64," in html and "Slices to review" in html
    uncertainty = sitk.GetArrayFromImage(sitk.ReadImage(str(out / expected[6])))
    assert 0 <= uncertainty.min() and uncertainty.max() <= 1


def test_demo_model_on_ircadb_dice_and_heatmap_mass_inside_the_liver(ircadb_outputs):
    """The default model was trained on this case: this checks the pipeline, not generalisation."""
    _, out, _ = ircadb_outputs
    truth, _ = read_volume(IRCADB_LABEL)
    labels, _ = read_volume(out / "ircadb17_label.nii.gz")
    heat, _ = read_volume(out / "ircadb17_gradcam_liver.nii.gz")
    liver_dice = per_case_dice(labels, truth, 1)
    tumor_dice = per_case_dice(labels, truth, 2)
    organ = labels_on_map_grid(labels, heat.shape[1:]) >= 1  # maps are 128 x 128 per slice
    inside = float(heat[organ].sum() / heat.sum())
    report = json.loads((out / "ircadb17_report.json").read_text())
    print(
        f"\nircadb17: liver Dice {liver_dice:.3f}, tumour Dice {tumor_dice:.3f}, "
        f"liver Grad-CAM mass inside predicted liver {inside:.3f}, timings {report['timings']}"
    )
    assert liver_dice > 0.8
    assert inside > 0.5
    # the report counts a 5 mm margin around the liver as inside: never less than without it
    assert report["heatmapMassInsideLiver"] >= inside - 1e-3


def test_randomising_the_demo_model_changes_its_heatmaps():
    model, metadata = load_checkpoint(resolve_model("unet-demo"))
    array, matrix = read_volume(require(IRCADB_CT))
    canonical = canonical_orientation(matrix).apply(array)
    spec = SliceInputSpec(metadata.hu_window, metadata.input_size, metadata.num_slices)
    inputs = spec.batch(canonical, [40, 60, 80])
    trained = attribute(model, inputs, 1, "gradcam")
    torch.manual_seed(0)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    randomised = attribute(model, inputs, 1, "gradcam")
    a, b = trained.flatten().numpy(), randomised.flatten().numpy()
    correlation = np.corrcoef(a, b)[0, 1] if b.std() > 0 else 0.0
    assert trained.sum() > 0
    assert correlation < 0.5


def test_demo_command_writes_outputs_and_a_scene_bundle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # a relative --out, as `make demo` gives
    completed = run_cli("demo", "--out", tmp_path.name)
    assert completed.returncode == 0, completed.stderr
    stem = "TotalSegmentatorExampleCT"
    for suffix in (
        "_label.nii.gz",
        "_gradcam_liver.nii.gz",
        "_gradcam_tumor.nii.gz",
        ".seg.nrrd",
        "_report.json",
        "_overview.png",
        "_uncertainty.nii.gz",
        "_report.html",
    ):
        assert (tmp_path / f"{stem}{suffix}").is_file()
    with zipfile.ZipFile(tmp_path / "scene.mrb") as bundle:
        names = bundle.namelist()
    assert any(n.endswith(".mrml") for n in names)
    assert sum(n.endswith((".nrrd", ".nii.gz", ".nii")) for n in names) >= 4
    report = json.loads((tmp_path / f"{stem}_report.json").read_text())
    assert report["liverVolumeMl"] > 500  # an adult liver is about 1,200-1,800 mL


def test_segment_reports_bad_input_clearly(tmp_path):
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, 4, sitk.sitkInt16), str(flat))
    completed = run_cli("segment", str(flat), "--out", str(tmp_path / "out"))
    assert completed.returncode == 2
    assert "constant" in completed.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    completed = run_cli("segment", str(tmp_path / "absent.nii.gz"), "--out", str(tmp_path / "out"))
    assert completed.returncode == 2 and "not found" in completed.stderr
