"""A label that does not fit its CT: ``train`` and ``crossval`` stop before any training,
naming the case and the reason; with ``--keep-going`` they leave it out and go on.

The cases are real: the small TotalSegmentator sample and crops of the development patients
(``test_crossval``'s), each given a label one slice short or moved by 5 mm.
"""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLE_SMALL_CT
from test_crossval import CROPS, crop, crossval, per_case, write_csv
from test_data import SMALL_LIVER, lits_folder
from test_training import command, run


def test_crossval_refuses_it_or_leaves_it_out_of_every_fold(tmp_path):
    from LiverXAILib.training.case_checks import label_fit_problem
    from LiverXAILib.training.cases import Case

    folder, cache = tmp_path / "crops", tmp_path / "cache"
    folder.mkdir()
    rows = [(*crop(name, folder), name) for name in list(CROPS)[:2]]
    image, label = crop("hcctace_2144", tmp_path, label_slices=(34, 41))  # one slice short
    data = write_csv(tmp_path / "cases.csv", [*rows, (image, label, "short")])
    status, events, error = crossval(data, tmp_path / "run", cache)
    assert status == 2 and not (tmp_path / "run").exists()
    assert "Case short: label hcctace_2144_label.nii.gz is (512, 512, 7) voxels" in error
    assert "the CT (512, 512, 8)" in error

    # With --keep-going the case is left out of every fold and its own fold fails.
    status, events, _ = crossval(data, tmp_path / "run", cache, "--keep-going", "--folds", "short")
    assert status == 1
    assert [e["case"] for e in events if e["event"] == "excluded"] == ["short"]
    result = json.loads((tmp_path / "run" / "fold-short" / "result.json").read_text())
    assert result["status"] == "failed" and "(512, 512, 7) voxels" in result["reason"]
    assert "short" not in result["train_cases"]
    assert per_case(tmp_path / "run")["short"]["status"] == "failed"
    text = (tmp_path / "run" / "metrics.md").read_text(encoding="utf-8")
    assert (
        "| short | short | failed: short: label" in text
        and "- Left out of every fold: short" in text
    )

    import SimpleITK as sitk  # a label moved by 5 mm: same grid, other place

    moved = sitk.ReadImage(str(folder / "hcctace_0697_label.nii.gz"))
    moved.SetOrigin(tuple(o + 5.0 * (i == 0) for i, o in enumerate(moved.GetOrigin())))
    sitk.WriteImage(moved, str(tmp_path / "moved.nii.gz"))
    problem = label_fit_problem(Case(folder / "hcctace_0697_ct.nii.gz", tmp_path / "moved.nii.gz"))
    assert problem.startswith("label and CT have different geometry")


@pytest.mark.slow
def test_train_refuses_it_or_trains_on_the_others_with_keep_going(tmp_path):
    from LiverXAILib.io.volumes import read_volume, write_volume

    data = lits_folder(tmp_path / "lits", count=2)
    labels, ijk_to_ras = read_volume(SMALL_LIVER)
    write_volume(tmp_path / "short.nii.gz", labels[:-1], ijk_to_ras)  # one slice short
    good = sorted(data.rglob("volume-*.nii.gz"))
    rows = [f"{v},{v.parent / v.name.replace('volume', 'segmentation')},{v.name[:8]}" for v in good]
    rows.append(f"{SAMPLE_SMALL_CT},{tmp_path / 'short.nii.gz'},short")
    table = tmp_path / "cases.csv"
    table.write_text("image,label,case\n" + "\n".join(rows) + "\n", encoding="utf-8")

    message = run(command(table, tmp_path / "run", tmp_path / "cache", 1), expect=2)[-1]["message"]
    assert message.startswith("Case short: label short.nii.gz is (")
    assert "--keep-going" in message
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "cache").exists()

    arguments = command(table, tmp_path / "run", tmp_path / "cache", 1, "--validation-fraction")
    events = run([*arguments, "0", "--test-fraction", "0", "--keep-going"])
    excluded = [e for e in events if e["event"] == "excluded"]
    assert [e["case"] for e in excluded] == ["short"] and "voxels, the CT" in excluded[0]["reason"]
    split = next(e for e in events if e["event"] == "split")
    assert sorted(split["train"]) == ["volume-0", "volume-1"]
    assert "short" not in (tmp_path / "run" / "split.json").read_text(encoding="utf-8")
    assert events[-1]["event"] == "done"
