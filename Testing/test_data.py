"""Dataset discovery (LiTS, MSD, CSV), the split by patient, and canonical case loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import IRCADB_CT, IRCADB_LABEL, SAMPLE_SMALL_CT, SHARED_DATA, require
from LiverXAILib.errors import InputError
from LiverXAILib.io.volumes import read_volume, write_volume
from LiverXAILib.segment.orientation import canonical_orientation
from LiverXAILib.training.cases import (
    Case,
    DataSplit,
    discover_cases,
    load_canonical_case,
    split_by_patient,
)

SMALL_LIVER = SHARED_DATA / "totalseg_example" / "example_ct_sm_liver.nii.gz"


def lits_folder(root, count=3):
    """A LiTS-layout folder of symlinks to the small real case, in two batch sub-folders."""
    for number in range(count):
        batch = root / f"Training Batch {1 + number % 2}"
        batch.mkdir(parents=True, exist_ok=True)
        (batch / f"volume-{number}.nii.gz").symlink_to(require(SAMPLE_SMALL_CT))
        (batch / f"segmentation-{number}.nii.gz").symlink_to(require(SMALL_LIVER))
    return root


def test_lits_layout_in_batch_folders(tmp_path):
    cases = discover_cases(lits_folder(tmp_path / "LiTS", count=12))
    assert [c.case_id for c in cases] == [f"volume-{n}" for n in range(12)]  # numeric order
    assert cases[10].patient == "lits-10"
    assert cases[10].label.name == "segmentation-10.nii.gz"


def test_lits_volume_without_segmentation_is_named(tmp_path):
    folder = lits_folder(tmp_path, count=2)
    (folder / "Training Batch 2" / "segmentation-1.nii.gz").unlink()
    with pytest.raises(InputError, match="volume-1.nii.gz has no segmentation-1"):
        discover_cases(folder)


def test_msd_layout_from_dataset_json(tmp_path):
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir()
    for number in (3, 7):
        (tmp_path / "imagesTr" / f"liver_{number}.nii.gz").symlink_to(require(SAMPLE_SMALL_CT))
        (tmp_path / "labelsTr" / f"liver_{number}.nii.gz").symlink_to(require(SMALL_LIVER))
    training = [
        {"image": f"./imagesTr/liver_{n}.nii.gz", "label": f"./labelsTr/liver_{n}.nii.gz"}
        for n in (3, 7)
    ]
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "Liver", "training": training}))
    cases = discover_cases(tmp_path)
    assert [(c.case_id, c.patient) for c in cases] == [
        ("liver_3", "liver_3"),
        ("liver_7", "liver_7"),
    ]


def test_csv_with_patient_column_and_relative_paths(tmp_path):
    (tmp_path / "a.nii.gz").symlink_to(require(SAMPLE_SMALL_CT))
    (tmp_path / "a_label.nii.gz").symlink_to(require(SMALL_LIVER))
    (tmp_path / "cases.csv").write_text(
        "image,label,case,patient\n"
        "a.nii.gz,a_label.nii.gz,first,p1\n"
        "a.nii.gz,a_label.nii.gz,second,p1\n"
        "a.nii.gz,a_label.nii.gz,third,p2\n"
    )
    cases = discover_cases(tmp_path / "cases.csv")
    assert [c.patient for c in cases] == ["p1", "p1", "p2"]
    split = split_by_patient(cases, validation_fraction=0.4, test_fraction=0, seed=1)
    parts = [{c.patient for c in split.part(p)} for p in ("train", "validation")]
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == {"p1", "p2"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("path,mask\nx,y\n", "image,label"),
        ("image,label\nmissing.nii.gz,missing.nii.gz\n", "line 2: image"),
    ],
)
def test_bad_csv_is_named(tmp_path, content, message):
    (tmp_path / "cases.csv").write_text(content)
    with pytest.raises(InputError, match=message):
        discover_cases(tmp_path / "cases.csv")


def test_folder_without_cases_lists_the_layouts(tmp_path):
    with pytest.raises(InputError, match="LiTS files.*MSD folder.*CSV"):
        discover_cases(tmp_path)
    with pytest.raises(InputError, match="not found"):
        discover_cases(tmp_path / "nowhere")


def test_split_is_by_patient_seeded_and_written(tmp_path):
    cases = [Case(f"{n}.nii", f"{n}_l.nii", f"c{n}", f"p{n // 2}") for n in range(40)]
    split = split_by_patient(cases, 0.15, 0.15, seed=3)
    parts = {p: {c.patient for c in split.part(p)} for p in ("train", "validation", "test")}
    assert len(parts["validation"]) == 3 and len(parts["test"]) == 3  # 15 % of 20 patients
    assert not parts["train"] & parts["validation"] and not parts["train"] & parts["test"]
    assert not parts["validation"] & parts["test"]
    assert len(split.part("all")) == 40
    assert split_by_patient(cases, 0.15, 0.15, seed=3).to_dict() == split.to_dict()
    assert split_by_patient(cases, 0.15, 0.15, seed=4).to_dict() != split.to_dict()
    split.write(tmp_path / "split.json")
    assert DataSplit.read(tmp_path / "split.json").to_dict() == split.to_dict()


def test_small_splits_keep_a_training_patient():
    two = [Case("a.nii", "al.nii", "a"), Case("b.nii", "bl.nii", "b")]
    split = split_by_patient(two)
    assert len(split.train) == 1 and len(split.validation) == 1 and not split.test
    one = split_by_patient(two[:1])
    assert len(one.train) == 1 and not one.validation
    with pytest.raises(ValueError, match="leave patients for training"):
        split_by_patient(two, 0.5, 0.5)


def test_canonical_case_matches_inference_orientation():
    case = Case(require(IRCADB_CT), require(IRCADB_LABEL))
    loaded = load_canonical_case(case)
    image, ijk_to_ras = read_volume(IRCADB_CT)
    expected = canonical_orientation(ijk_to_ras).apply(image)
    np.testing.assert_array_equal(loaded.image, expected)
    assert loaded.labels.dtype == np.uint8 and set(np.unique(loaded.labels)) == {0, 1, 2}
    assert loaded.spacing == pytest.approx((1.6, 0.743, 0.743), abs=1e-3)


def test_label_with_other_values_or_grid_is_refused(tmp_path):
    image, ijk_to_ras = read_volume(require(SAMPLE_SMALL_CT))
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[0, 0, 0] = 7
    write_volume(tmp_path / "bad.nii.gz", labels, ijk_to_ras)
    with pytest.raises(InputError, match=r"label values \[7\]"):
        load_canonical_case(Case(SAMPLE_SMALL_CT, tmp_path / "bad.nii.gz"))
    write_volume(tmp_path / "small.nii.gz", labels[:5], ijk_to_ras)
    with pytest.raises(InputError, match="voxels, the CT"):
        load_canonical_case(Case(SAMPLE_SMALL_CT, tmp_path / "small.nii.gz"))
    shifted = ijk_to_ras.copy()
    shifted[0, 3] += 10
    write_volume(tmp_path / "shifted.nii.gz", np.zeros_like(labels), shifted)
    with pytest.raises(InputError, match="different geometry"):
        load_canonical_case(Case(SAMPLE_SMALL_CT, tmp_path / "shifted.nii.gz"))
