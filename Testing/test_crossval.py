"""Leave-one-patient-out cross-validation (``crossval``) on real CT cropped to eight slices.

Three real patients (two with tumour, one tumour-free) are cropped around the liver into a
temporary folder; the runs train a tiny U-Net for one or two epochs. Checked: the fold
folders, results and tables (with pending folds), skipping finished folds, rescoring a fold
whose result was lost, stopping with ``DIR/STOP`` and resuming from ``last.pt``, resuming a
killed run without redoing its finished folds, a changed
recipe, a fold that fails, and the lesion-size measure.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA, require
from LiverXAILib.cli.main import main

CROPS = {"hcctace_0697": (27, 35), "ircadb01_p07": (90, 98), "hcctace_2144": (34, 42)}
FAST = [
    "--epochs", "1", "--size", "128", "--arch", "unet", "--arch-option",
    "features=[4,8,16,32,64]", "--augment", "none", "--keep-empty", "0", "--batch-size", "8",
]  # fmt: skip


def crop(name: str, folder: Path, label_slices: tuple[int, int] | None = None) -> list[Path]:
    """The CT and label of a real case cut to its ``CROPS`` slices (the label maybe others)."""
    import SimpleITK as sitk

    first, last = CROPS[name]
    paths = []
    for kind, (z0, z1) in (("ct", (first, last)), ("label", label_slices or (first, last))):
        image = sitk.ReadImage(str(require(SHARED_DATA / name / f"{kind}.nii.gz")))
        paths.append(folder / f"{name}_{kind}.nii.gz")
        sitk.WriteImage(image[:, :, z0:z1], str(paths[-1]))
    return paths


def write_csv(path: Path, rows: list[tuple[Path, Path, str]]) -> Path:
    lines = ["image,label,case,patient"] + [f"{i},{lab},{p},{p}" for i, lab, p in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cases")
    rows = [(*crop(name, folder), name) for name in CROPS]
    return write_csv(folder / "cases.csv", rows)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def crossval(data: Path, out: Path, cache: Path, *extra: str) -> tuple[int, list, str]:
    """``python -m LiverXAILib crossval`` in this process: (exit status, events, stderr)."""
    arguments = ["crossval", "--data", str(data), "--out", str(out), "--cache", str(cache)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main([*arguments, *FAST, *extra])
    lines = stdout.getvalue().splitlines()
    return status, [json.loads(line) for line in lines if line.startswith("{")], stderr.getvalue()


def per_case(out: Path) -> dict[str, dict]:
    with open(out / "per_case.csv", newline="", encoding="utf-8") as stream:
        return {row["case"]: row for row in csv.DictReader(stream)}


def mtimes(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in out.glob("fold-*/last.pt")}


@pytest.fixture(scope="module")
def first_run(cases, cache, tmp_path_factory) -> tuple[Path, int, list]:
    """Two of the three folds run: the tumour case and the tumour-free one."""
    out = tmp_path_factory.mktemp("crossval") / "run"
    status, events, _ = crossval(cases, out, cache, "--folds", "hcctace_0697,ircadb01_p07")
    return out, status, events


def test_folds_results_and_tables(first_run):
    out, status, events = first_run
    assert status == 0
    assert [e["status"] for e in events if e["event"] == "fold"] == ["start", "done"] * 2
    assert not (out / "fold-hcctace_2144").exists()  # not chosen: pending
    for patient in ("hcctace_0697", "ircadb01_p07"):
        folder = out / f"fold-{patient}"
        for name in ("last.pt", "history.csv", "split.json", "result.json"):
            assert (folder / name).is_file(), name
        assert not (folder / "best.pt").exists()  # --select last: no epoch is scored or chosen
        result = json.loads((folder / "result.json").read_text())
        assert result["status"] == "done" and result["test_cases"] == [patient]
        assert sorted(result["train_cases"]) == sorted(set(CROPS) - {patient})
        split = json.loads((folder / "split.json").read_text())
        assert patient not in [c["case_id"] for c in split["train"]] and not split["validation"]
        assert result["recipe"]["epochs"] == 1 and result["recipe"]["select"] == "last"
        assert result["epochs_run"] == 1 and result["training_seconds"] > 0
        (row,) = result["cases"]
        assert 0 <= row["liver_dice"] <= 1 and len(row["confusion"]) == 3

    rows = per_case(out)
    assert list(rows) == list(CROPS)  # one row per case, in the data's order
    assert rows["hcctace_2144"]["status"] == "pending" and rows["hcctace_2144"]["liver_dice"] == ""
    tumour, free = rows["hcctace_0697"], rows["ircadb01_p07"]
    assert tumour["status"] == free["status"] == "done"
    assert tumour["true_lesions"] == "1" and tumour["true_large_lesions"] == "1"  # 2.4 mL, ~17 mm
    assert float(tumour["true_tumor_ml"]) == pytest.approx(2.36, abs=0.1)
    assert free["true_lesions"] == "0" and free["lesion_recall"] == ""  # n/a without tumour
    assert float(free["false_tumor_ml"]) == pytest.approx(float(free["predicted_tumor_ml"]))

    text = (out / "metrics.md").read_text(encoding="utf-8")
    assert "| hcctace_2144 | hcctace_2144 | pending |" in text
    recall_10 = "1.000" if tumour["detected_large_lesions"] == "1" else "0.000"  # pooled: one
    for line in (
        "| Cases scored | 2 |",
        "| Cases pending | 1 |",
        "| Liver: Dice per case, mean (LiTS) |",
        "| Liver: Dice per case, min |",
        "| Liver: Dice global (LiTS) |",
        "| Tumour: Dice, mean over cases with tumour |",
        "| Tumour: Dice global (LiTS) |",
        f"| Tumour: Lesion recall ≥ 10 mm (pooled) | {recall_10} |",
        "| Tumour: False-positive lesions per case |",
        "| Tumour: False tumour (mL), mean over tumour-free cases |",
    ):
        assert line in text, line
    with open(out / "metrics.csv", newline="", encoding="utf-8") as stream:
        long = list(csv.DictReader(stream))
    summary = {(r["class"], r["metric"]): r["value"] for r in long if r["scope"] == "summary"}
    assert summary["all", "cases_done"] == "2" and summary["tumor", "tumor_free_cases"] == "1"
    liver = [float(summary["liver_organ", f"dice_per_case_{m}"]) for m in ("min", "mean")]
    assert liver[0] <= liver[1]
    assert {r["scope"] for r in long} == {"summary", *CROPS}


def test_tuning_scores_the_grid_on_the_held_out_patients_and_applies_it(first_run, tmp_path):
    from LiverXAILib.evaluation.crossval_tuning import MIN_TUMOR_ML, TUMOR_BIASES
    from LiverXAILib.models.checkpoints import load_checkpoint

    run = tmp_path / "run"
    shutil.copytree(first_run[0], run)
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main(["crossval-tune", "--run", str(run), "--device", "cpu"]) == 0
    assert "nested: chosen without the patient scored" in stdout.getvalue()
    result = json.loads((run / "postprocessing.json").read_text())
    assert result["patients"] == ["hcctace_0697", "ircadb01_p07"]  # the finished folds
    with open(run / "postprocessing_grid.csv", newline="", encoding="utf-8") as stream:
        grid = list(csv.DictReader(stream))
    assert len(grid) == 2 * len(TUMOR_BIASES) * len(MIN_TUMOR_ML)
    untuned = {
        r["case"]: r for r in grid if float(r["tumor_bias"]) == 0 == float(r["min_tumor_ml"])
    }
    for case, row in per_case(run).items():  # bias 0, no minimum: the cross-validation's labels
        if row["status"] == "done":
            assert float(untuned[case]["tumor_dice"]) == pytest.approx(
                float(row["tumor_dice"]), abs=0.02
            )
    for setting in result["nested"]["settings"].values():
        assert setting["tumor_bias"] in TUMOR_BIASES and setting["min_tumor_ml"] in MIN_TUMOR_ML
    chosen = result["chosen"]
    tuned = tmp_path / "tuned.pt"
    model = run / "fold-hcctace_0697" / "last.pt"
    arguments = ["crossval-tune", "--run", str(run), "--apply", str(model), "--to", str(tuned)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(arguments) == 0
    _network, metadata = load_checkpoint(tuned)
    assert (metadata.tumor_bias, metadata.min_tumor_ml) == (
        chosen["tumor_bias"],
        chosen["min_tumor_ml"],
    )
    assert "chosen by crossval-tune on run" in metadata.notes
    with pytest.raises(SystemExit, match="--apply and --to go together"):
        main(["crossval-tune", "--run", str(run), "--apply", str(model)])


def test_a_second_run_skips_finished_folds(first_run, cases, cache):
    out = first_run[0]
    before = mtimes(out)
    folds = ("--folds", "hcctace_0697,ircadb01_p07", "--resume")
    status, events, _ = crossval(cases, out, cache, *folds)
    assert status == 0
    assert [e.get("status") for e in events if e["event"] == "fold"] == ["skipped"] * 2
    assert not [e for e in events if e["event"] in ("start", "epoch", "case")]  # no work
    assert mtimes(out) == before


def test_a_lost_result_is_scored_again_without_training(first_run, cases, cache):
    out = first_run[0]
    (out / "fold-ircadb01_p07" / "result.json").unlink()  # as after a crash while scoring
    before = mtimes(out)
    status, events, _ = crossval(cases, out, cache, "--folds", "ircadb01_p07", "--resume")
    assert status == 0
    assert not [e for e in events if e["event"] in ("start", "epoch")]  # not trained again
    assert [e["case"] for e in events if e["event"] == "case"] == ["ircadb01_p07"]
    assert mtimes(out) == before
    result = json.loads((out / "fold-ircadb01_p07" / "result.json").read_text())
    assert result["status"] == "done" and result["epochs_run"] == 1
    assert per_case(out)["ircadb01_p07"]["status"] == "done"


def test_a_changed_recipe_or_a_used_folder_is_refused(first_run, cases, cache):
    out = first_run[0]
    results = {p: p.read_text() for p in out.glob("fold-*/result.json")}
    status, events, error = crossval(cases, out, cache, "--resume", "--loss", "ce")
    assert status == 2 and "the recipe differs" in error and "loss: dicece → ce" in error
    assert events[-1]["event"] == "error"
    status, _, error = crossval(cases, out, cache)
    assert status == 2 and "already holds a cross-validation run" in error and "--resume" in error
    assert {p: p.read_text() for p in out.glob("fold-*/result.json")} == results
    assert not (out / "fold-hcctace_2144").exists()


def test_stop_file_stops_and_resume_continues_from_last_pt(cases, cache, tmp_path):
    from LiverXAILib.evaluation.crossval import CrossvalConfig, run_crossval

    out = tmp_path / "run"
    training = {"architecture_kwargs": {"features": [4, 8, 16, 32, 64]}, "epochs": 2}
    training.update(augmentations=(), keep_empty_fraction=0.0, batch_size=8)
    config = CrossvalConfig(cases, out, training, folds=["hcctace_0697"], cache_dir=cache)
    events: list[dict] = []

    def stop_after_first_epoch(record: dict) -> None:
        events.append(record)
        if record["event"] == "epoch":
            (out / "STOP").touch()

    assert run_crossval(config, stop_after_first_epoch) == 1
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [0]
    assert not (out / "STOP").exists() and not (out / "fold-hcctace_0697" / "STOP").exists()
    assert not (out / "fold-hcctace_0697" / "result.json").exists()
    assert per_case(out)["hcctace_0697"]["status"] == "pending"

    events.clear()
    config.resume = True
    assert run_crossval(config, events.append) == 0
    assert {"event": "resume", "epoch": 1, "fold": "hcctace_0697"} in events
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1]
    result = json.loads((out / "fold-hcctace_0697" / "result.json").read_text())
    assert result["status"] == "done" and result["epochs_run"] == 2


def test_a_killed_run_resumes_without_redoing_finished_folds(cases, cache, tmp_path):
    """SIGKILL (no clean-up at all) in the second fold's second epoch, then ``--resume``."""
    import signal

    out = tmp_path / "run"
    arguments = ["crossval", "--data", str(cases), "--out", str(out), "--cache", str(cache)]
    arguments += [*FAST, "--epochs", "3", "--folds", "hcctace_0697,ircadb01_p07"]
    process = subprocess.Popen(
        [sys.executable, "-m", "LiverXAILib", *arguments],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "LiverXAI"), OMP_NUM_THREADS="2"),
    )
    for line in process.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        second_fold = event.get("fold") == "ircadb01_p07"
        if second_fold and event.get("event") == "step" and event["epoch"] == 1:
            process.send_signal(signal.SIGKILL)  # epoch 0 and its last.pt are done
            break
    process.wait(timeout=120)
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert (out / "fold-hcctace_0697" / "result.json").is_file()
    assert not (out / "fold-ircadb01_p07" / "result.json").exists()
    finished = mtimes(out)[str(out / "fold-hcctace_0697" / "last.pt")]

    status, events, _ = crossval(cases, out, cache, "--epochs", "3", "--resume")
    assert status == 0
    folds = {e["fold"]: e.get("status") for e in events if e["event"] == "fold"}
    assert folds["hcctace_0697"] == "skipped"
    resumed = [e["epoch"] for e in events if e["event"] == "resume"]
    assert resumed in ([1], [2])  # the epoch after the last one saved before the kill
    trained = [e["epoch"] for e in events if e["event"] == "epoch" and e["fold"] == "ircadb01_p07"]
    assert trained == list(range(resumed[0], 3))
    result = json.loads((out / "fold-ircadb01_p07" / "result.json").read_text())
    assert result["status"] == "done" and result["epochs_run"] == 3
    assert mtimes(out)[str(out / "fold-hcctace_0697" / "last.pt")] == finished
    assert {row["status"] for row in per_case(out).values()} == {"done"}


def test_a_failed_fold_stops_with_exit_2_naming_it(cases, cache, tmp_path):
    import SimpleITK as sitk

    folder = cases.parent
    label = sitk.ReadImage(str(folder / "ircadb01_p07_label.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    array[4, 100, 100] = 7
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(label)
    sitk.WriteImage(broken, str(tmp_path / "seven.nii.gz"))
    rows = [
        (folder / "hcctace_0697_ct.nii.gz", folder / "hcctace_0697_label.nii.gz", "hcctace_0697"),
        (folder / "ircadb01_p07_ct.nii.gz", tmp_path / "seven.nii.gz", "seven"),
    ]
    data = write_csv(tmp_path / "cases.csv", rows)
    status, events, error = crossval(data, tmp_path / "run", cache)
    assert status == 2
    assert "Fold hcctace_0697 (held-out case hcctace_0697) failed: seven: label values [7]" in error
    result = json.loads((tmp_path / "run" / "fold-hcctace_0697" / "result.json").read_text())
    assert result["status"] == "failed" and "label values [7]" in result["reason"]
    assert not (tmp_path / "run" / "fold-seven").exists()  # stopped: the next fold never ran


def test_unknown_folds_and_a_single_patient_are_refused(cases, cache, tmp_path):
    status, _, error = crossval(cases, tmp_path / "run", cache, "--folds", "nobody")
    assert status == 2 and "unknown patient(s) nobody" in error and "hcctace_0697" in error
    folder = cases.parent
    one = write_csv(
        tmp_path / "one.csv",
        [(folder / "hcctace_0697_ct.nii.gz", folder / "hcctace_0697_label.nii.gz", "p")],
    )
    status, _, error = crossval(one, tmp_path / "run", cache)
    assert status == 2 and "two patients or more" in error
    assert not (tmp_path / "run").exists()


def test_lesions_by_size_counts_large_lesions_only():
    from LiverXAILib.evaluation.crossval_report import lesions_by_size

    truth = np.zeros((6, 80, 80), dtype=np.uint8)
    prediction = np.zeros_like(truth)
    truth[2:4, 10:14, 10:14] = 2  # 4 x 4 voxels of 1 mm: 4.2 mm across, small
    truth[1:5, 30:45, 30:45] = 2  # 15 x 15: 19.8 mm across, large, missed
    prediction[2:4, 10:14, 10:14] = 2  # finds the small one
    prediction[1:3, 60:72, 10:12] = 2  # 11.0 mm long, touches nothing: a large false positive
    measured = lesions_by_size(prediction, truth, (2.0, 1.0, 1.0))
    assert measured["true_large_lesions"] == 1 and measured["detected_large_lesions"] == 0
    assert measured["predicted_large_lesions"] == 1
    assert measured["true_positive_large_lesions"] == 0
    assert measured["false_tumor_ml"] == pytest.approx(2 * 12 * 2 * 2.0 / 1000)
    sizes = measured["true_lesion_sizes"]
    assert [round(s["diameter_mm"], 1) for s in sizes] == [19.8, 4.2]  # raster order
    assert [s["detected"] for s in sizes] == [False, True]
    empty = lesions_by_size(np.zeros_like(truth), np.zeros_like(truth), (1.0, 1.0, 1.0))
    assert empty["true_large_lesions"] == 0 and empty["false_tumor_ml"] == 0.0


def test_crossval_help_imports_nothing_heavy():
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "LiverXAILib", "crossval", "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "LiverXAI")),
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (
        "leave-one-patient-out" in completed.stdout.lower() and "--keep-going" in completed.stdout
    )
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in completed.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & {"torch", "numpy", "SimpleITK", "scipy", "monai", "matplotlib"}
