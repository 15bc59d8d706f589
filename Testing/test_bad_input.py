"""The bad-input suite: each kind of bad input or fault, run as a user runs it.

Every case goes through ``python -m LiverXAILib`` (in this process, or in a child process
where a signal is sent) and checks one of two outcomes: a one-line error naming the problem
with exit status 2 and no output file, or a correct result with a warning that also reaches
the report. Either way the input file is unchanged. ``docs/bad-input.md`` lists the kinds and
what the user gets; the DICOM, checkpoint, training and batch kinds have their own suites
(test_dicom_series.py, test_checkpoint_validation.py, test_training.py, test_batch.py) and a
representative run in test_bad_input_models.py.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cli_checks import (
    FAST,
    OUTPUT_SUFFIXES,
    digest,
    error_lines,
    from_array,
    nothing_written,
    run,
    sample_image,
    write,
)
from conftest import ROOT, SAMPLE_SMALL_CT, require


# Inputs refused before any work: exit 2, one line, nothing written -------------------------
def _missing(tmp: Path) -> Path:
    return tmp / "absent.nii.gz"


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def _truncated(tmp: Path) -> Path:
    data = require(SAMPLE_SMALL_CT).read_bytes()
    path = tmp / "cut.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _fake(tmp: Path) -> Path:
    path = tmp / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"these are not voxels\n" * 40))
    return path


def _two_d(tmp: Path) -> Path:
    array = sitk.GetArrayFromImage(sample_image())[12].astype(np.int16)
    return write(sitk.GetImageFromArray(array), tmp / "slice.nii")


def _four_d(tmp: Path) -> Path:
    image = sample_image()
    return write(sitk.JoinSeries([image, image]), tmp / "series4d.nii.gz")


def _vector(tmp: Path) -> Path:
    array = sitk.GetArrayFromImage(sample_image())
    return write(sitk.GetImageFromArray(np.stack([array] * 3, -1), isVector=True), tmp / "rgb.nrrd")


def _constant(tmp: Path) -> Path:
    return write(sitk.Image(64, 64, 8, sitk.sitkInt16), tmp / "flat.nii.gz")


def _not_hounsfield(tmp: Path) -> Path:
    image = sample_image()
    array = (sitk.GetArrayFromImage(image).astype(np.float32) + 1024) / 4096  # 0..1
    return write(from_array(array, image), tmp / "scaled.nii.gz")


def _all_nan(tmp: Path) -> Path:
    image = sample_image()
    array = np.full(sitk.GetArrayFromImage(image).shape, np.nan, np.float32)
    return write(from_array(array, image), tmp / "nan.nii.gz")


def _nan_but_two(tmp: Path) -> Path:
    image = sample_image()
    array = np.full(sitk.GetArrayFromImage(image).shape, np.nan, np.float32)
    array[3, 4, 5], array[10, 20, 30] = -1000.0, 60.0
    return write(from_array(array, image), tmp / "nan2.nii.gz")


def _sheared(tmp: Path) -> Path:
    image = sample_image()
    angle = np.radians(12.0)  # a gantry tilt: the slice axis leans towards anterior
    image.SetDirection((-1, 0, 0, 0, -1, np.sin(angle), 0, 0, np.cos(angle)))
    return write(image, tmp / "tilted.nrrd")


REFUSED: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "missing file": (_missing, ("not found",)),
    "empty file": (_empty, ("empty.nii.gz",)),
    "truncated file": (_truncated, ("incomplete",)),
    "not an image": (_fake, ("notes.nii.gz",)),
    "2D image": (_two_d, ("2D",)),
    "4D image": (_four_d, ("4D",)),
    "colour / vector image": (_vector, ("values per voxel",)),
    "constant volume": (_constant, ("constant",)),
    "not Hounsfield units": (_not_hounsfield, ("Hounsfield",)),
    "every voxel NaN": (_all_nan, ("NaN",)),
    "all NaN but two voxels": (_nan_but_two, ("NaN or infinite",)),
    "sheared (gantry-tilted) grid": (_sheared, ("not perpendicular",)),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_refused_with_one_line_and_nothing_written(kind, tmp_path, capsys):
    build, words = REFUSED[kind]
    source = build(tmp_path)
    before = digest(source)
    out = tmp_path / "out"
    status, stderr = run(capsys, "segment", str(source), "--out", str(out), *FAST)
    assert status == 2, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert nothing_written(out)
    assert digest(source) == before


def test_output_folder_under_a_file_is_refused_before_the_work(tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output folder should go")
    status, stderr = run(capsys, "segment", str(SAMPLE_SMALL_CT), "--out", str(blocker / "x"))
    assert status == 2
    assert error_lines(stderr) == [
        f"error: Output folder {blocker / 'x'} lies under {blocker}, which is a file, not a folder."
    ]
    assert "Loading model" not in stderr  # refused before the model was even loaded
    status, stderr = run(capsys, "segment", str(SAMPLE_SMALL_CT), "--out", str(blocker))
    assert status == 2 and "is a file, not a folder" in stderr
    assert blocker.read_text().startswith("a file")


def test_dicom_seg_export_of_a_nifti_input_is_refused_before_the_work(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ("segment", str(SAMPLE_SMALL_CT), "--out", str(out), "--export", "dicom-seg")
    status, stderr = run(capsys, *argv)
    assert status == 2
    lines = error_lines(stderr)
    assert len(lines) == 1 and "DICOM" in lines[0], stderr
    assert "Loading model" not in stderr
    assert nothing_written(out)


@pytest.mark.parametrize(
    "option", [("--batch-size", "0"), ("--batch-size", "-4"), ("--ig-steps", "0")]
)
def test_options_out_of_range_are_refused(option, tmp_path, capsys):
    status, stderr = run(capsys, "segment", str(SAMPLE_SMALL_CT), "--out", str(tmp_path), *option)
    assert status == 2 and option[0] in stderr and "at least 1" in stderr


# Inputs accepted with a warning: exit 0, the warning on the console and in the report ------
def _few_nan(tmp: Path) -> Path:
    image = sample_image()
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[:, :3, :] = np.nan  # a strip outside the body, as a resampling leaves
    array[0, 0, :4] = np.inf
    return write(from_array(array, image), tmp / "holes.nii.gz")


def _spacing(value: float) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        image = sample_image()
        image.SetSpacing((value, value, value))
        return write(image, tmp / f"spacing_{str(value).replace('.', '_')}.nii.gz")

    return build


def _float64(tmp: Path) -> Path:
    image = sample_image()
    return write(sitk.Cast(image, sitk.sitkFloat64), tmp / "double.nrrd")


ACCEPTED: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "a few NaN / infinite voxels": (_few_nan, ("NaN", "lowest value")),
    "50 mm voxels": (_spacing(50.0), ("Unusual pixel size",)),
    "0.01 mm voxels": (_spacing(0.01), ("Unusual pixel size",)),
    "64-bit float voxels": (_float64, ()),
}


@pytest.mark.parametrize("kind", list(ACCEPTED))
def test_accepted_with_a_warning_in_console_and_report(kind, tmp_path, capsys):
    build, words = ACCEPTED[kind]
    source = build(tmp_path)
    before = digest(source)
    out = tmp_path / "out"
    status, stderr = run(capsys, "segment", str(source), "--out", str(out), *FAST)
    assert status == 0, stderr
    stem = source.name.split(".")[0]
    for suffix in OUTPUT_SUFFIXES:
        assert (out / f"{stem}{suffix}").is_file(), suffix
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    report = json.loads((out / f"{stem}_report.json").read_text())
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    for word in words:
        assert any(word in line for line in warnings), stderr
        assert any(word in text for text in report["warnings"])
        assert word in (out / f"{stem}_report.html").read_text()
    label = sitk.ReadImage(str(out / f"{stem}_label.nii.gz"))
    original = sitk.ReadImage(str(source))
    assert label.GetSize() == original.GetSize()
    assert np.allclose(label.GetSpacing(), original.GetSpacing())
    assert digest(source) == before


def test_empty_review_list_with_uncertainty_writes_the_report(tmp_path, capsys):
    """No explanation means no review list; with uncertainty on (the default) the report's
    figure chooser once indexed the coarse uncertainty map with a full-size mask."""
    out = tmp_path / "out"
    status, stderr = run(
        capsys, "segment", str(SAMPLE_SMALL_CT), "--out", str(out), "--explain", "none"
    )
    assert status == 0, stderr
    report = json.loads((out / "example_ct_sm_report.json").read_text())
    assert report["reviewItems"] == [] and report["uncertaintyNodeID"]
    assert (out / "example_ct_sm_report.html").is_file()


def test_non_hounsfield_input_runs_when_allowed(tmp_path, capsys):
    source = _not_hounsfield(tmp_path)
    out = tmp_path / "out"
    status, stderr = run(
        capsys, "segment", str(source), "--out", str(out), "--allow-non-hu", "--explain", "none"
    )
    assert status == 0, stderr
    assert (out / "scaled_report.json").is_file()


@pytest.mark.slow
def test_a_2048_matrix_runs(tmp_path, capsys):
    image = sample_image()
    array = sitk.GetArrayFromImage(image)[10:14]
    big = np.kron(array, np.ones((1, 16, 16), np.int16))  # (4, 1616, 1952)
    big = np.pad(big, ((0, 0), (0, 2048 - big.shape[1]), (0, 2048 - big.shape[2])), "edge")
    large = sitk.GetImageFromArray(np.ascontiguousarray(big))
    large.SetSpacing((0.2, 0.2, 3.0))
    source = write(large, tmp_path / "large.nii.gz")
    out = tmp_path / "out"
    status, stderr = run(capsys, "segment", str(source), "--out", str(out), "--explain", "none")
    assert status == 0, stderr
    assert sitk.ReadImage(str(out / "large_label.nii.gz")).GetSize() == (2048, 2048, 4)


# Faults during the run: exit 1, one line, nothing half-made --------------------------------
def test_failure_while_writing_leaves_no_output(tmp_path, capsys, monkeypatch):
    from LiverXAILib.report import overview

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(overview, "render_overview", disk_full)
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("kept")
    status, stderr = run(capsys, "segment", str(SAMPLE_SMALL_CT), "--out", str(out), *FAST)
    assert status == 1
    lines = error_lines(stderr)
    assert len(lines) == 1 and "No space left on device" in lines[0], stderr
    assert "no output was written" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]


def test_signal_while_writing_leaves_no_output(tmp_path, capsys, monkeypatch):
    """SIGTERM arrives while the files are being written: the set is abandoned, whole."""
    from LiverXAILib.io import result_files as outputs

    real = outputs.write_volume
    calls = []

    def write_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(args[0])
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(outputs, "write_volume", write_then_signal)
    out = tmp_path / "out"
    status, stderr = run(capsys, "segment", str(SAMPLE_SMALL_CT), "--out", str(out), *FAST)
    assert status == 1
    assert error_lines(stderr) == [f"Interrupted by SIGTERM: no output was written to {out}."]
    assert calls and nothing_written(out)


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_the_command_leaves_no_output(number, tmp_path):
    """A real process, interrupted as soon as the network has run."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "LiverXAI"), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "LiverXAILib", "segment", str(SAMPLE_SMALL_CT), "--out", str(out)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Adding results to the scene" in line:
            process.send_signal(number)
            break
    rest = process.communicate(timeout=300)[1]
    assert process.returncode == 1, "".join(lines) + rest
    name = signal.Signals(number).name
    assert f"Interrupted by {name}: no output was written to {out}." in rest
    assert "Traceback" not in rest
    assert nothing_written(out)
