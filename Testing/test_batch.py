"""Batch Segment & Explain on real CT: a folder of NIfTI, NRRD and DICOM cases, one model.

The cases are copies of the small sample CT (30 slices of 3 mm) in each input format, a
truncated file and files that are not cases. Explanations of the liver only and no
uncertainty keep each case to a few seconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest
import SimpleITK as sitk
from conftest import ROOT, SAMPLE_SMALL_CT, require
from LiverXAILib.batch.cases import case_names, find_cases
from LiverXAILib.batch.runner import process_files
from LiverXAILib.batch.summary import SUMMARY_COLUMNS
from LiverXAILib.cli.main import is_batch_input
from LiverXAILib.errors import InputError
from LiverXAILib.slicer.batch_table import summary_table_node
from LiverXAILib.slicer.headless import create_headless_application
from LiverXAILib.slicer.logic import LiverXAILogic
from LiverXAILib.slicer.scene import hierarchy_items, node_ids
from test_exports import tilted_series
from test_volume_io import write_dicom_series

OPTIONS = {"explainClasses": ["liver"], "uncertainty": "none"}
GOOD = ["case2", "case3_dicom", "case10"]
CASE_FILES = [
    "{}_label.nii.gz",
    "{}_gradcam_liver.nii.gz",
    "{}.seg.nrrd",
    "{}_overview.png",
    "{}_report.html",
    "{}_report.json",
]


def make_input_folder(folder):
    """case2.nii.gz, case3_dicom/ (a series), case10.nrrd, broken.nii.gz and non-cases."""
    folder.mkdir()
    shutil.copyfile(require(SAMPLE_SMALL_CT), folder / "case2.nii.gz")
    image = sitk.ReadImage(str(SAMPLE_SMALL_CT))
    sitk.WriteImage(image, str(folder / "case10.nrrd"), useCompression=True)
    write_dicom_series(image, folder / "case3_dicom")
    (folder / "broken.nii.gz").write_bytes(SAMPLE_SMALL_CT.read_bytes()[:100])
    # not cases: text, hidden copy, a segmentation, a folder without DICOM
    (folder / "notes.txt").write_text("not a CT")
    shutil.copyfile(SAMPLE_SMALL_CT, folder / ".hidden.nii.gz")
    (folder / "labels.seg.nrrd").write_bytes(b"NRRD0004\n")
    (folder / "documents").mkdir()
    (folder / "documents" / "readme.txt").write_text("no DICOM here")
    return folder


def read_summary(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == SUMMARY_COLUMNS
        return {row["case"]: row for row in reader}


def visible_and_hidden(folder):
    names = sorted(p.name for p in folder.iterdir())
    return [n for n in names if not n.startswith(".")], [n for n in names if n.startswith(".")]


class LoadCounter:
    """Counts real checkpoint loads (the real loader still runs)."""

    def __init__(self, monkeypatch):
        from LiverXAILib.models import checkpoints

        self.calls = 0
        real = checkpoints.load_checkpoint

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(checkpoints, "load_checkpoint", counting)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One run over the folder, the output folder inside the input folder."""
    folder = make_input_folder(tmp_path_factory.mktemp("batch") / "cases")
    out = folder / "results"
    app = create_headless_application()
    before = node_ids(app.scene), hierarchy_items(app.scene)
    progress = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        loads = LoadCounter(monkeypatch)
        logic = LiverXAILogic(app.scene, app.appLogic)
        result = process_files(
            logic,
            find_cases(folder),
            out,
            progress=lambda fraction, message: progress.append((fraction, message)),
            **OPTIONS,
        )
    return {
        "folder": folder,
        "out": out,
        "app": app,
        "before": before,
        "result": result,
        "progress": progress,
        "loads": loads.calls,
    }


def test_find_cases_lists_ct_files_and_series_folders_in_natural_order(first_run, tmp_path):
    folder = first_run["folder"]  # also holds the output folder "results" by now
    assert [p.name for p in find_cases(folder)] == [
        "broken.nii.gz",
        "case2.nii.gz",
        "case3_dicom",
        "case10.nrrd",
    ]
    assert is_batch_input(folder) and not is_batch_input(folder / "case3_dicom")
    assert not is_batch_input(folder / "case2.nii.gz")
    with pytest.raises(InputError, match="not found"):
        find_cases(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    with pytest.raises(InputError, match="No CT cases found"):
        find_cases(tmp_path / "empty")
    names = case_names([folder / "ct.nii.gz", folder / "ct.nrrd", tmp_path / "ct.nrrd"])
    assert names == ["ct_nii_gz", "ct_nrrd", "ct_nrrd-2"]


def test_summary_case_folders_and_a_failed_case(first_run):
    out, result = first_run["out"], first_run["result"]
    rows = read_summary(out / "summary.csv")
    assert list(rows) == ["broken", *GOOD]
    assert [row["case"] for row in result.rows] == list(rows)
    print("\n" + (out / "summary.csv").read_text())

    broken = rows["broken"]
    assert broken["status"] == "failed"
    assert "broken.nii.gz is damaged or incomplete" in broken["reason"]
    assert broken["liver_ml"] == broken["output_folder"] == ""
    assert not result.ok and result.count("done") == 3 and result.count("failed") == 1

    visible, hidden = visible_and_hidden(out)
    assert visible == sorted([*GOOD, "summary.csv"]) and hidden == []
    liver = []
    for case in GOOD:
        row = rows[case]
        assert row["status"] == "done" and row["reason"] == "" and row["output_folder"] == case
        assert sorted(p.name for p in (out / case).iterdir()) == sorted(
            name.format(case) for name in CASE_FILES
        )
        report = json.loads((out / case / f"{case}_report.json").read_text())
        assert report["batch"]["input"].endswith(case if case.endswith("dicom") else "")
        assert float(row["liver_ml"]) == pytest.approx(report["liverVolumeMl"], abs=0.01)
        assert float(row["tumor_ml"]) == pytest.approx(report["tumorVolumeMl"], abs=0.01)
        assert int(row["tumor_count"]) == report["tumorCount"] == len(report["lesions"])
        diameters = [x["longest_axial_diameter_mm"] for x in report["lesions"]]
        assert row["largest_tumor_diameter_mm"] == (f"{max(diameters):.1f}" if diameters else "")
        # review slices: distinct slices the review list covers (a merged item its range)
        covered = {
            s
            for i in report["reviewItems"]
            for s in range(
                min(i["firstSlice"], i["lastSlice"]), max(i["firstSlice"], i["lastSlice"]) + 1
            )
        }
        assert int(row["review_slices"]) == len(covered)
        assert float(row["seconds"]) > 0
        liver.append(report["liverVolumeMl"])
    assert liver[0] > 100  # the sample CT holds most of a liver
    assert max(liver) - min(liver) < 0.01 * liver[0]  # one CT in three formats


def test_one_model_load_flat_scene_and_a_table_node(first_run):
    app, result = first_run["app"], first_run["result"]
    assert first_run["loads"] == 1
    nodes, items = first_run["before"]
    assert node_ids(app.scene) == nodes  # no case nodes are left behind
    assert hierarchy_items(app.scene) == items  # nor subject hierarchy items and folders
    table = summary_table_node(result, app.scene)
    assert node_ids(app.scene) - nodes == {table.GetID()}
    assert table.IsA("vtkMRMLTableNode")
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == list(
        SUMMARY_COLUMNS
    )
    assert table.GetNumberOfRows() == 4
    vtk_table = table.GetTable()
    assert vtk_table.GetValueByName(1, "case").ToString() == "case2"
    assert vtk_table.GetValueByName(1, "liver_ml").ToDouble() == pytest.approx(
        result.rows[1]["liver_ml"]
    )
    assert vtk_table.GetValueByName(0, "status").ToString() == "failed"
    assert table.GetColumnUnitLabel("liver_ml") == "mL"


def test_progress_is_overall_with_case_and_step(first_run):
    progress = first_run["progress"]
    fractions = [fraction for fraction, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = [message for _, message in progress]
    assert "case 1/4: broken — reading" in messages
    assert "case 3/4: case3_dicom — slice 30 of 30" in messages
    assert "case 3/4: case3_dicom — segmented" in messages
    assert "case 4/4: case10 — writing outputs" in messages
    assert messages[-1] == "4 cases: 3 done, 0 skipped, 1 failed"


def test_rerun_skips_done_cases_and_overwrite_redoes_them(first_run, headless, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(first_run["out"], out)
    first = read_summary(out / "summary.csv")
    report = out / "case10" / "case10_report.json"
    written = report.stat().st_mtime_ns
    logic = LiverXAILogic(headless.scene, headless.appLogic)
    result = process_files(logic, find_cases(first_run["folder"]), out, **OPTIONS)
    rows = read_summary(out / "summary.csv")
    assert [rows[c]["status"] for c in rows] == ["failed", "skipped", "skipped", "skipped"]
    for case in GOOD:  # re-read from the reports: the same numbers, the first run's seconds
        for column in SUMMARY_COLUMNS[1:7]:
            assert rows[case][column] == first[case][column]
    assert report.stat().st_mtime_ns == written
    assert result.count("skipped") == 3

    inode = (out / "case10").stat().st_ino
    before = node_ids(headless.scene)
    result = process_files(
        logic,
        [first_run["folder"] / "case10.nrrd"],
        out,
        overwrite=True,
        keep_in_scene=True,
        **OPTIONS,
    )
    assert [row["status"] for row in result.rows] == ["done"] and result.ok
    kept = result.results["case10"]  # keep_in_scene: the case's nodes stay for a look
    assert headless.scene.GetNodeByID(kept.labelmapNodeID).GetName() == "case10 LiverXAI labels"
    assert len(node_ids(headless.scene) - before) > 3
    assert (out / "case10").stat().st_ino != inode  # a new folder replaced the old one
    assert report.stat().st_mtime_ns != written
    assert sorted(p.name for p in (out / "case10").iterdir()) == sorted(
        name.format("case10") for name in CASE_FILES
    )
    assert visible_and_hidden(out)[1] == []


def test_cancel_abandons_the_current_case_and_leaves_no_partial_folder(
    first_run, headless, tmp_path
):
    folder, out = first_run["folder"], tmp_path / "results"
    before = node_ids(headless.scene)
    cancel = threading.Event()

    def progress(_fraction, message):
        if " — slice " in message:  # inside segmentAndExplain of the first case
            cancel.set()

    logic = LiverXAILogic(headless.scene, headless.appLogic)
    result = process_files(
        logic,
        [folder / "case2.nii.gz", folder / "case10.nrrd"],
        out,
        progress=progress,
        cancel=cancel,
        **OPTIONS,
    )
    assert result.cancelled and not result.ok
    rows = read_summary(out / "summary.csv")
    assert [(r["status"], r["reason"]) for r in rows.values()] == [
        ("cancelled", "cancelled while running"),
        ("cancelled", "not started: the run was cancelled"),
    ]
    assert visible_and_hidden(out) == (["summary.csv"], [])
    assert node_ids(headless.scene) == before


def test_an_interruption_while_writing_leaves_no_partial_folder(first_run, headless, tmp_path):
    folder, out = first_run["folder"], tmp_path / "results"
    leftover = out / ".liverxai-partial-case2-crashed"  # as a killed run leaves it
    leftover.mkdir(parents=True)
    (leftover / "case2_label.nii.gz").write_bytes(b"half")
    before = node_ids(headless.scene)
    seen = {}

    def progress(_fraction, message):
        if message.endswith("writing the report"):  # the volumes are written by now
            partial = [p for p in out.iterdir() if p.name.startswith(".liverxai-partial-")]
            seen["partial"] = sorted(p.name for d in partial for p in d.iterdir())
            raise KeyboardInterrupt  # as Ctrl-C would

    logic = LiverXAILogic(headless.scene, headless.appLogic)
    with pytest.raises(KeyboardInterrupt):
        process_files(logic, [folder / "case2.nii.gz"], out, progress=progress, **OPTIONS)
    assert "case2_label.nii.gz" in seen["partial"] and "case2_report.json" not in seen["partial"]
    assert visible_and_hidden(out) == (["summary.csv"], [])  # the leftover went, too
    rows = read_summary(out / "summary.csv")
    assert rows["case2"]["status"] == "cancelled"
    assert "interrupted (KeyboardInterrupt)" in rows["case2"]["reason"]
    assert node_ids(headless.scene) == before


def run_cli(*args):
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "LiverXAI"))
    return subprocess.run(
        [sys.executable, "-m", "LiverXAILib", *args],
        capture_output=True,
        encoding="utf-8",  # the progress lines hold an em dash, whatever the locale
        env=environment,
        timeout=600,
    )


def test_segment_command_on_a_folder(tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copyfile(require(SAMPLE_SMALL_CT), folder / "small.nii.gz")
    (folder / "broken.nii.gz").write_bytes(SAMPLE_SMALL_CT.read_bytes()[:100])
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    options = ("--out", str(out), "--explain", "none", "--uncertainty", "none")
    completed = run_cli("segment", str(folder), *options)
    assert completed.returncode == 1, completed.stderr  # a case failed
    assert "case 2/2: small — " in completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].split() == [
        "case", "liver", "mL", "tumour", "mL", "tumours", "largest", "mm", "review", "s", "status"
    ]  # fmt: skip
    assert lines[1].startswith("broken") and lines[1].endswith("failed")
    assert lines[2].startswith("small") and lines[2].endswith("done")
    assert "broken: broken.nii.gz is damaged or incomplete" in completed.stdout
    rows = read_summary(out / "summary.csv")
    assert [rows[c]["status"] for c in ("broken", "small")] == ["failed", "done"]
    assert (out / "small" / "small_label.nii.gz").is_file()
    assert (out / "small" / "small_report.json").is_file()

    (folder / "broken.nii.gz").unlink()
    completed = run_cli("segment", str(folder), *options)
    assert completed.returncode == 0, completed.stderr
    assert "1 case: 0 done, 1 skipped, 0 failed" in completed.stdout
    assert read_summary(out / "summary.csv")["small"]["status"] == "skipped"


def test_logic_process_folder_exports_and_adds_the_summary_table_node(headless, tmp_path):
    """The console entry point, ``LiverXAILogic().processFolder``, with exports: DICOM SEG
    for the DICOM case only, surfaces for both; the summary becomes a table node."""
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copyfile(require(SAMPLE_SMALL_CT), cases / "small.nii.gz")
    tilted_series(cases / "series")  # a full CT series: DICOM SEG needs its frame of reference
    (cases / "notes.txt").write_text("not a CT")
    logic = LiverXAILogic(headless.scene, headless.appLogic)
    out = tmp_path / "out"
    result = logic.processFolder(
        cases,
        out,
        exports=("stl", "dicom-seg"),
        explainClasses=["liver"],
        uncertainty="none",
    )
    assert [row["status"] for row in result.rows] == ["done", "done"]
    assert (out / "series" / "series_seg.dcm").is_file()
    assert not list((out / "small").glob("*.dcm"))
    assert (out / "small" / "small_liver.stl").is_file()
    table = result.tableNode
    assert table.IsA("vtkMRMLTableNode") and table.GetNumberOfRows() == 2
    assert (out / "summary.csv").is_file()
    renderings = headless.scene.GetNodesByClass("vtkMRMLVolumeRenderingDisplayNode")
    assert renderings.GetNumberOfItems() == 0  # no 3D display nodes for a batch
