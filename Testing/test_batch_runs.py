"""Batch runs into one output folder over time, on the small real sample CT: the summary
accumulates, cases done with other settings are not skipped silently, a second run at the same
time is refused, and LiverXAI's own outputs beside the cases are not taken for cases.

Cases are explained with nothing and without uncertainty, so each takes about a second.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import SimpleITK as sitk
from conftest import SAMPLE_SMALL_CT, require
from LiverXAILib.batch.cases import find_cases
from LiverXAILib.batch.runner import clean_leftovers, process_files
from LiverXAILib.constants import DEFAULT_MODEL
from LiverXAILib.models.catalog import resolve_model, sha256_file
from LiverXAILib.slicer.headless import create_headless_application
from LiverXAILib.slicer.logic import LiverXAILogic
from test_batch import read_summary, run_cli, visible_and_hidden
from test_volume_io import write_dicom_series

OPTIONS = {"explainClasses": [], "uncertainty": "none"}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """Cases a.nii.gz, b.nrrd, c.nii.gz and broken.nii.gz; a and b done into "out"."""
    folder = tmp_path_factory.mktemp("runs") / "cases"
    folder.mkdir()
    shutil.copyfile(require(SAMPLE_SMALL_CT), folder / "a.nii.gz")
    shutil.copyfile(SAMPLE_SMALL_CT, folder / "c.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE_SMALL_CT)), str(folder / "b.nrrd"))
    (folder / "broken.nii.gz").write_bytes(SAMPLE_SMALL_CT.read_bytes()[:100])
    out = folder.parent / "out"
    app = create_headless_application()
    logic = LiverXAILogic(app.scene, app.appLogic)
    result = process_files(logic, [folder / "a.nii.gz", folder / "b.nrrd"], out, **OPTIONS)
    assert [row["status"] for row in result.rows] == ["done", "done"]
    return {"folder": folder, "out": out, "app": app, "logic": logic}


def copied_output(done, tmp_path):
    return shutil.copytree(done["out"], tmp_path / "out")


def statuses(out):
    return [(case, row["status"]) for case, row in read_summary(out / "summary.csv").items()]


def report_of(out, case):
    return json.loads((out / case / f"{case}_report.json").read_text())


def test_the_summary_accumulates_over_runs(done, tmp_path):
    folder, logic = done["folder"], done["logic"]
    out = copied_output(done, tmp_path)
    first = read_summary(out / "summary.csv")
    result = process_files(logic, [folder / "broken.nii.gz"], out, **OPTIONS)
    assert [row["case"] for row in result.rows] == ["broken"]  # the run's own rows
    assert statuses(out) == [("a", "done"), ("b", "done"), ("broken", "failed")]
    assert read_summary(out / "summary.csv")["a"] == first["a"]  # rebuilt from its report

    process_files(logic, [folder / "c.nii.gz", folder / "b.nrrd"], out, **OPTIONS)
    assert statuses(out) == [("a", "done"), ("b", "skipped"), ("broken", "failed"), ("c", "done")]

    shutil.rmtree(out / "a")  # removed by the user: no longer listed
    process_files(logic, [folder / "broken.nii.gz"], out, **OPTIONS)
    assert statuses(out) == [("b", "skipped"), ("broken", "failed"), ("c", "done")]

    (out / "summary.csv").unlink()  # lost: rebuilt from the complete case folders
    process_files(logic, [folder / "broken.nii.gz"], out, **OPTIONS)
    rows = read_summary(out / "summary.csv")
    assert statuses(out) == [("b", "done"), ("c", "done"), ("broken", "failed")]
    assert float(rows["c"]["liver_ml"]) == pytest.approx(
        report_of(out, "c")["liverVolumeMl"], abs=0.01
    )
    assert float(rows["c"]["seconds"]) == pytest.approx(
        report_of(out, "c")["batch"]["seconds"], abs=0.1
    )


def test_a_case_done_with_other_settings_is_not_skipped_silently(done, tmp_path):
    folder, logic = done["folder"], done["logic"]
    out = copied_output(done, tmp_path)
    settings = report_of(out, "a")["batch"]["settings"]
    assert settings["modelSha256"] == sha256_file(resolve_model(DEFAULT_MODEL))
    assert settings["model"] == DEFAULT_MODEL and settings["explainClasses"] == []
    assert settings["uncertainty"] == "none" and settings["exports"] == []
    assert "device" not in settings and "batchSize" not in settings
    cases = [folder / "a.nii.gz", folder / "b.nrrd"]
    written = (out / "a" / "a_report.json").stat().st_mtime_ns

    # options that do not change the outputs: still skipped
    same = dict(
        OPTIONS, device="cpu", batchSize=3, allowNonHU=True, explainMethods=["integrated-gradients"]
    )
    result = process_files(logic, cases, out, **same)
    assert [row["status"] for row in result.rows] == ["skipped", "skipped"]

    result = process_files(logic, cases, out, explainClasses=["liver"], uncertainty="none")
    assert [row["status"] for row in result.rows] == ["failed", "failed"] and not result.ok
    reason = result.rows[0]["reason"]
    assert reason.startswith("made with other settings (explained classes: none vs liver; ")
    assert "methods: none vs gradcam" in reason
    assert reason.endswith("use overwrite (--overwrite) to redo it, or another output folder")
    assert statuses(out) == [("a", "failed"), ("b", "failed")]

    result = process_files(logic, cases[:1], out, model="vunet-dev", **OPTIONS)
    reason = result.rows[0]["reason"]
    default_sha = sha256_file(resolve_model(DEFAULT_MODEL))[:12]
    assert f"model {DEFAULT_MODEL} ({default_sha}…) vs vunet-dev (2d90f82ed6fe…)" in reason
    result = process_files(logic, cases[:1], out, exports=("nrrd",), **OPTIONS)
    assert "exports nrrd not written" in result.rows[0]["reason"]
    assert (out / "a" / "a_report.json").stat().st_mtime_ns == written  # nothing redone

    report = report_of(out, "b")  # a case made by an older LiverXAI
    del report["batch"]["settings"]
    (out / "b" / "b_report.json").write_text(json.dumps(report))
    result = process_files(logic, cases[1:], out, **OPTIONS)
    assert "none recorded: made by an older LiverXAI" in result.rows[0]["reason"]

    result = process_files(logic, cases, out, overwrite=True, explainClasses=["liver"])
    assert [row["status"] for row in result.rows] == ["done", "done"]
    assert report_of(out, "a")["batch"]["settings"]["explainClasses"] == ["liver"]
    result = process_files(logic, cases, out, explainClasses=["liver"])
    assert [row["status"] for row in result.rows] == ["skipped", "skipped"]


def test_every_segment_option_is_classified_for_the_settings():
    """A new Segment & Explain option must be recorded (it changes the outputs) or not."""
    import dataclasses

    from LiverXAILib.options import OTHER_OPTIONS, OUTPUT_OPTIONS, SegmentAndExplainOptions

    fields = [f.name for f in dataclasses.fields(SegmentAndExplainOptions)]
    assert sorted(fields) == sorted(OUTPUT_OPTIONS + OTHER_OPTIONS)


def test_a_second_run_into_the_same_folder_is_refused_at_once(done, tmp_path):
    from LiverXAILib.batch.lock import OutputFolderLocked

    folder, logic = done["folder"], done["logic"]
    out = tmp_path / "out"
    seen = {}

    def second_runs():
        partial = sorted(p.name for p in out.iterdir() if p.name.startswith(".liverxai-partial"))
        for name, attempt in (
            ("same process", lambda: process_files(logic, [folder / "c.nii.gz"], out, **OPTIONS)),
            ("clean", lambda: clean_leftovers(out)),
        ):
            try:
                attempt()
            except OutputFolderLocked as error:
                seen[name] = str(error)
        options = ("--out", str(out), "--explain", "none", "--uncertainty", "none")
        seen["cli"] = run_cli("segment", str(folder), *options)
        seen["partial"] = partial
        seen["partial after"] = sorted(p.name for p in out.iterdir() if p.name in partial)

    def progress(_fraction, message):
        if message.endswith("writing the report"):  # the case's files are in its partial folder
            second_runs()

    result = process_files(logic, [folder / "a.nii.gz"], out, progress=progress, **OPTIONS)
    assert [row["status"] for row in result.rows] == ["done"]
    locked = f"Another LiverXAI run (process {os.getpid()}"
    assert seen["same process"].startswith(locked) and str(out) in seen["same process"]
    assert seen["clean"].startswith(locked)  # clean_leftovers spares a running run's folders
    assert len(seen["partial"]) == 1 and seen["partial after"] == seen["partial"]
    cli = seen["cli"]
    assert cli.returncode == 2, cli.stderr
    assert f"error: {locked})" in cli.stderr and str(out) in cli.stderr
    assert visible_and_hidden(out) == (["a", "summary.csv"], [])  # the lock went with the run
    assert statuses(out) == [("a", "done")]
    result = process_files(logic, [folder / "c.nii.gz"], out, **OPTIONS)  # free again
    assert [row["status"] for row in result.rows] == ["done"]


def test_find_cases_ignores_outputs_written_beside_the_cases(tmp_path):
    from LiverXAILib.cli.main import main

    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copyfile(require(SAMPLE_SMALL_CT), folder / "ct.nii.gz")
    # a single-case run writing every kind of volume next to its input
    status = main(
        ["segment", str(folder / "ct.nii.gz"), "--out", str(folder), "--explain", "liver,tumor",
         "--methods", "gradcam,gradcam++,integrated-gradients", "--ig-steps", "2",
         "--uncertainty", "tta", "--export", "nrrd,nifti"]
    )  # fmt: skip
    assert status == 0
    written = {p.name for p in folder.iterdir()}
    for name in ("label", "uncertainty", "gradcam_liver", "gradcampp_tumor", "ig_liver"):
        assert {f"ct_{name}.nii.gz", f"ct_{name}.nrrd"} <= written
    write_dicom_series(sitk.ReadImage(str(SAMPLE_SMALL_CT)), folder / "series")
    (folder / "series_label.nii.gz").write_bytes(b"a DICOM case's output")
    (folder / "other_gradcam_tumor.nii.gz").write_bytes(b"its CT lies elsewhere")
    (folder / "other_report.json").write_text("{}")
    shutil.copyfile(SAMPLE_SMALL_CT, folder / "my ct.nii.gz")
    (folder / "my_ct_label.nrrd").write_bytes(b"exported with a file-safe stem")
    shutil.copyfile(SAMPLE_SMALL_CT, folder / "liver_label.nii.gz")  # a user's CT
    assert [p.name for p in find_cases(folder)] == [
        "ct.nii.gz",
        "liver_label.nii.gz",
        "my ct.nii.gz",
        "series",
    ]


def test_cases_nobody_keeps_never_enter_the_users_scene(done, tmp_path):
    folder, logic = done["folder"], done["logic"]
    before = logic.scene.GetNumberOfNodes()
    seen = []

    def progress(_fraction, _message):  # during the run, not only after it
        seen.append(logic.scene.GetNumberOfNodes())

    result = process_files(logic, [folder / "c.nii.gz"], tmp_path / "out", progress, **OPTIONS)
    assert [row["status"] for row in result.rows] == ["done"]
    assert set(seen) == {before}
