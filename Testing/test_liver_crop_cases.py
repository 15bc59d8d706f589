"""``bench/liver_crop_cases.py``: the liver-crop copies that screen a liver-then-tumour
cascade keep every liver and tumour voxel, stay in their true place and are square in mm."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ROOT, SAMPLE_SMALL_CT
from LiverXAILib.training.case_checks import label_fit_problem
from LiverXAILib.training.cases import Case, discover_cases
from test_data import SMALL_LIVER

sys.path.insert(0, str(ROOT / "bench"))

from liver_crop_cases import crop_box, crop_case, slice_axis  # noqa: E402


def volume(array: np.ndarray, spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-40.0, 12.5, 300.0))
    image.SetDirection(direction)
    return image


def test_the_box_is_square_in_mm_with_its_margin_and_stays_inside_the_slice():
    labels = np.zeros((20, 80, 60), dtype=np.uint8)  # (z, y, x)
    labels[5:10, 30:40, 10:30] = 1  # liver: 20 x 10 voxels of 0.8 mm, 5 slices of 2.5 mm
    labels[7, 33:35, 12:14] = 2
    image = volume(labels, (0.8, 0.8, 2.5))
    index, size = crop_box(image, margin_mm=4.0)
    # longer side 16 mm + 2 x 4 mm = 24 mm = 30 voxels in x and y, centred on the liver
    assert size[:2] == [30, 30] and index[:2] == [5, 20]
    assert (index[2], size[2]) == (3, 9)  # two slices (4 mm at 2.5 mm) above and below

    labels[:] = 0
    labels[5:10, 70:80, 0:20] = 1  # at the slice's edge: the box moves inside it
    index, size = crop_box(volume(labels, (0.8, 0.8, 2.5)), margin_mm=4.0)
    assert index[:2] == [0, 50] and size[:2] == [30, 30]
    with pytest.raises(ValueError, match="no liver"):
        crop_box(volume(np.zeros_like(labels), (1.0, 1.0, 1.0)), 4.0)


def test_the_slice_axis_follows_the_direction_not_the_array_order():
    sagittal = (0, 1, 0, 0, 0, 1, 1, 0, 0)  # index x runs head-feet (third row: z)
    image = volume(np.zeros((4, 5, 6), dtype=np.uint8), (1.0, 1.0, 1.0), sagittal)
    assert slice_axis(image) == 0
    assert slice_axis(volume(np.zeros((4, 5, 6), dtype=np.uint8), (1.0, 1.0, 1.0))) == 2


def test_a_real_case_keeps_its_liver_in_place_and_the_csv_feeds_crossval(tmp_path):
    case = Case(SAMPLE_SMALL_CT, SMALL_LIVER, "sample", "patient-1")
    ct, label = crop_case(case, tmp_path / "sample", margin_mm=10.0)
    assert label_fit_problem(Case(ct, label)) is None
    before, after = sitk.ReadImage(str(SMALL_LIVER)), sitk.ReadImage(str(label))
    assert sitk.GetArrayViewFromImage(after).sum() == sitk.GetArrayViewFromImage(before).sum()
    corner = after.TransformIndexToPhysicalPoint((0, 0, 0))
    assert before.TransformPhysicalPointToIndex(corner) == tuple(crop_box(before, 10.0)[0])

    table = tmp_path / "in.csv"
    table.write_text(
        f"image,label,case,patient\n{SAMPLE_SMALL_CT},{SMALL_LIVER},sample,patient-1\n"
    )
    script = ROOT / "bench" / "liver_crop_cases.py"
    completed = subprocess.run(
        [sys.executable, str(script), str(table), "--out", str(tmp_path / "crops")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    (cropped,) = discover_cases(tmp_path / "crops" / "cases.csv")
    assert (cropped.case_id, cropped.patient) == ("sample", "patient-1")
    assert cropped.label == tmp_path / "crops" / "sample" / "label.nii.gz"
