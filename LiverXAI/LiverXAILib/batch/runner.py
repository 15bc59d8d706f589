"""Segment & Explain a folder or a list of CT cases with one loaded model.

Used by ``LiverXAILogic.processFolder`` / ``processFiles`` (Slicer's Python console) and by
``python -m LiverXAILib segment DIR --out OUT``. Every case is read into a private scene of
its own (the user's scene only when the cases are to be kept there), segmented and explained,
written to ``OUT/<case>/`` from the run's arrays and removed from that scene again, so memory
stays flat over a long folder. A case's folder is written under a hidden temporary name and
renamed into place only when complete: an interrupted run never leaves a half-written case
(leftovers of a crash are removed by the next run). A re-run skips the cases already done with
the same model and options (``batch_settings``), unless ``overwrite``; a case done with other
settings is not skipped silently: it fails with the differences, and only ``overwrite`` redoes
it. A case that fails is recorded with its reason and the run goes on. One run at a time
writes into an output folder (``batch_lock``): a second one fails at once.
``OUT/summary.csv`` lists every case of the folder, of this run and earlier ones (one row each),
and is rewritten atomically after every case, so it is valid at any moment. Finding the cases
is ``batch_cases``; the summary's rows and table are ``batch_summary``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import Cancelled, InputError
from ..options import SegmentAndExplainOptions
from .cases import case_names
from .lock import OutputFolderLocked, output_folder_lock
from .settings import (
    case_settings,
    mismatch_reason,
    recorded_settings,
    run_settings,
    settings_differences,
)
from .summary import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    SKIPPED,
    SUMMARY_FILE,
    BatchResult,
    earlier_rows,
    empty_row,
    read_complete_report,
    report_path,
    report_seconds,
    row_from_report,
)

__all__ = [
    "OutputFolderLocked",
    "clean_leftovers",
    "process_files",
    "read_complete_report",
    "report_path",
]

PARTIAL_PREFIX = ".liverxai-partial-"  # a case being written
OLD_PREFIX = ".liverxai-old-"  # a previous result being replaced (overwrite)

Progress = Callable[[float, str], None]
log = logging.getLogger(__name__)


# Output folders ---------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def clean_leftovers(output_dir: Path) -> list[Path]:
    """Remove the temporary folders and files an interrupted run left in ``output_dir``.

    Takes the folder's lock first: a run in progress holds it, so its partial folders are
    never removed (``OutputFolderLocked`` instead)."""
    with output_folder_lock(output_dir):
        return _remove_leftovers(Path(output_dir))


def _remove_leftovers(output_dir: Path) -> list[Path]:
    """``clean_leftovers`` for the run that holds the folder's lock."""
    removed = []
    for path in output_dir.iterdir():
        name = path.name
        if name.startswith((PARTIAL_PREFIX, OLD_PREFIX)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif name.startswith(f".{SUMMARY_FILE}.") and path.is_file():  # atomic_path's
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _commit(temporary: Path, final: Path) -> None:
    """Rename a finished case folder into place, replacing an earlier one (overwrite)."""
    os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
    if not final.exists() and not final.is_symlink():
        os.rename(temporary, final)
        return
    if final.is_symlink() or not final.is_dir():
        raise FileExistsError(f"{final} exists and is not a case folder; move it away first.")
    old = final.parent / f"{OLD_PREFIX}{final.name[:40]}-{os.getpid()}-{time.time_ns()}"
    os.rename(final, old)
    try:
        os.rename(temporary, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


# Processing -------------------------------------------------------------------------------
def _reason(error: BaseException) -> str:
    if isinstance(error, InputError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def process_files(
    logic: Any,
    inputs: Iterable[str | Path],
    output_dir: str | Path,
    progress: Progress | None = None,
    cancel: Any = None,
    overwrite: bool = False,
    keep_in_scene: bool = False,
    options: SegmentAndExplainOptions | None = None,
    **changes: Any,
) -> BatchResult:
    """Segment & Explain every input (file or DICOM series folder) into ``output_dir``.

    ``logic`` is a ``LiverXAILogic``: its cached network is loaded once for the whole run, and
    its scene receives the cases only with ``keep_in_scene`` (else a private scene does).
    ``options`` (with keyword ``changes`` on top) go to ``segmentAndExplain``; without
    ``keep_in_scene`` no 3D display is made. Each case is written to ``output_dir/<case>/``
    (``write_outputs`` plus ``<case>_report.json``, whose ``batch`` section records the model's
    SHA-256 and the options, see :mod:`batch.settings`), then its nodes are removed from the
    scene unless ``keep_in_scene``; ``options.exports`` (see :mod:`slicer.exports`) are written
    into the case folder too. ``progress(fraction, message)`` gets the overall fraction and
    "case i/n: name — step". ``cancel`` (e.g. ``threading.Event``) stops the run as soon as
    possible: the current case is abandoned, leaving nothing behind, and it and every later case
    get status "cancelled". A case already done with the same model and options is skipped
    unless ``overwrite``; one done with other settings gets status "failed" (naming the
    differences) unless ``overwrite`` redoes it; a case that fails gets status "failed" with its
    reason and the run goes on. ``summary.csv`` keeps the rows of the folder's cases that are
    not in this run; the returned rows are this run's.

    Raises ``CheckpointError`` for an unusable model before any case is written (an unknown or
    missing one before anything is), and ``OutputFolderLocked`` (an ``InputError``) at once when
    another run is writing into ``output_dir``: the folder is locked for the whole run.
    """
    output_dir = Path(output_dir)
    inputs = [Path(path) for path in inputs]
    names = case_names(inputs)
    options = (options or SegmentAndExplainOptions()).replace(showResults=False, **changes)
    if not keep_in_scene:  # no 3D display nodes for cases nobody looks at
        options = options.replace(volumeRendering=False, ctVolumeRendering=False)
    options = options.validate()  # before the folder is touched
    report = progress or (lambda _fraction, _message: None)
    result = BatchResult(output_dir, [empty_row(name) for name in names])
    settings = run_settings(options)  # resolves and hashes the model, once
    if not keep_in_scene:  # the user's scene never sees a case nobody looks at
        logic = logic.withPrivateScene()

    output_dir.mkdir(parents=True, exist_ok=True)
    with output_folder_lock(output_dir):  # held for the whole run: nobody else writes here
        _remove_leftovers(output_dir)
        if any(overwrite or read_complete_report(output_dir, name) is None for name in names):
            report(0.0, "Loading model")
            logic.loadModel(settings["model"])  # errors stop the run here
        result.previous = earlier_rows(output_dir, names)
        result.write_summary()
        _run_cases(
            logic, inputs, names, result, report, cancel, overwrite, keep_in_scene, settings,
            options,
        )  # fmt: skip
    report(1.0, result.describe())
    return result


def _run_cases(
    logic: Any,
    inputs: list[Path],
    names: list[str],
    result: BatchResult,
    report: Progress,
    cancel: Any,
    overwrite: bool,
    keep_in_scene: bool,
    settings: dict[str, Any],
    options: SegmentAndExplainOptions,
) -> None:
    """The loop of ``process_files`` over its cases, with the output folder locked."""
    output_dir = result.output_dir
    current = None
    try:
        for index, (path, name) in enumerate(zip(inputs, names, strict=True)):
            if cancel is not None and cancel.is_set():
                result.cancelled = True
                break
            current = index
            step = _case_progress(report, index, len(inputs), name)
            wanted = case_settings(settings, case_formats(path, options.exports))
            existing = None if overwrite else read_complete_report(output_dir, name)
            if existing is not None:
                result.rows[index], message = _done_before(name, existing, wanted)
                step(1.0, message)
            else:
                row, case_result = _process_case(
                    logic, path, name, output_dir, step, cancel, keep_in_scene, wanted, options,
                )  # fmt: skip
                result.rows[index] = row
                result.cancelled = row["status"] == CANCELLED
                if case_result is not None:
                    result.results[name] = case_result
                step(1.0, row["status"])
            result.write_summary()
            if result.cancelled:
                break
    except BaseException as error:  # KeyboardInterrupt, SystemExit: the case was cleaned up
        result.cancelled = True
        if current is not None and result.rows[current]["status"] == PENDING:
            reason = f"interrupted ({type(error).__name__}); nothing was kept"
            result.rows[current].update(status=CANCELLED, reason=reason)
        raise
    finally:
        if result.cancelled:
            _cancel_pending(result)
        result.write_summary()


def _case_progress(report: Progress, index: int, count: int, name: str) -> Progress:
    """The progress of case ``index`` (of ``count``): its own fraction as a fraction of the
    whole run, and its messages as "case i/n: name — message"."""
    total = max(count, 1)

    def step(fraction: float, message: str) -> None:
        report(
            (index + min(max(fraction, 0.0), 1.0)) / total,
            f"case {index + 1}/{count}: {name} — {message}",
        )

    return step


def _done_before(name: str, existing: dict, wanted: dict) -> tuple[dict[str, Any], str]:
    """The row and progress message of a case already complete in the output folder: skipped
    if made with the ``wanted`` settings, else failed naming the differences (only
    ``overwrite`` redoes it)."""
    differences = settings_differences(recorded_settings(existing), wanted)
    if differences:
        reason = mismatch_reason(differences)
        return empty_row(name, FAILED, reason), "done before with other settings"
    seconds = report_seconds(existing)
    reason = "already done (overwrite to redo)"
    return row_from_report(name, existing, SKIPPED, seconds, reason), "already done, skipped"


def _cancel_pending(result: BatchResult) -> None:
    """Every case not started gets status "cancelled"."""
    for row in result.rows:
        if row["status"] == PENDING:
            row.update(status=CANCELLED, reason="not started: the run was cancelled")


def case_formats(path: Path, export_formats: Sequence[str]) -> list[str]:
    """The export formats written for a case: DICOM SEG only for DICOM inputs (a folder may
    mix them with NIfTI/NRRD cases)."""
    return [f for f in export_formats if f != "dicom-seg" or path.is_dir()]


def _process_case(
    logic: Any,
    path: Path,
    name: str,
    output_dir: Path,
    step: Progress,
    cancel: Any,
    keep_in_scene: bool,
    settings: dict[str, Any],
    options: SegmentAndExplainOptions,
) -> tuple[dict[str, Any], Any]:
    """Read, segment, explain and write one case; returns its summary row and, with
    ``keep_in_scene``, its ``SegmentAndExplainResult``. Never raises an ``Exception``: a
    failure becomes a "failed" row. The scene and the output folder are left as they were,
    except for the finished case folder and, with ``keep_in_scene``, the case's nodes."""
    from ..io.result_files import write_json
    from ..slicer import scene as mrml

    started = time.perf_counter()
    scene = logic.scene
    before = mrml.node_ids(scene), mrml.hierarchy_items(scene)
    temporary = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{name[:40]}-", dir=output_dir))
    keep_nodes = False
    try:
        node, result, source = _segment_case(logic, path, name, step, cancel, options)
        step(0.86, "writing outputs")
        formats = settings["exports"]  # case_formats
        report = _write_case_outputs(scene, node, result, source, path, name, temporary, formats)
        seconds = time.perf_counter() - started
        report["timings"]["case_total"] = seconds
        report["batch"] = {
            "case": name,
            "input": str(path),
            "seconds": seconds,
            "exports": formats,
            "settings": settings,  # what the outputs were made with (batch_settings)
        }
        step(0.98, "writing the report")
        write_json(temporary / f"{name}_report.json", report)  # the last file: marks complete
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled while writing its outputs; nothing was kept")
        _commit(temporary, output_dir / name)
        keep_nodes = keep_in_scene
        return row_from_report(name, report, DONE, seconds), result if keep_in_scene else None
    except Cancelled as error:
        reason = str(error) if "nothing was kept" in str(error) else "cancelled while running"
        row = empty_row(name, CANCELLED, reason)
    except Exception as error:
        if not isinstance(error, InputError):
            log.warning("LiverXAI batch: case %s failed", name, exc_info=True)
        row = empty_row(name, FAILED, _reason(error))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if not keep_nodes:
            mrml.remove_case_nodes(scene, *before)
    row["seconds"] = time.perf_counter() - started
    return row, None


def _segment_case(
    logic: Any,
    path: Path,
    name: str,
    step: Progress,
    cancel: Any,
    options: SegmentAndExplainOptions,
) -> tuple[Any, Any, dict[str, Any]]:
    """Read a case into the logic's scene (a volume node named ``name``) and segment and
    explain it; returns the node, the ``SegmentAndExplainResult`` and where it was read from."""
    from ..io.volumes import read_volume_and_source
    from ..slicer import scene as mrml

    step(0.0, "reading")
    array, ijk_to_ras, source = read_volume_and_source(path)
    node = mrml.add_volume_from_array(logic.scene, array, ijk_to_ras, name)
    del array
    result = logic.segmentAndExplain(
        node,
        options,
        progressCallback=lambda fraction, message: step(
            0.05 + 0.8 * fraction, "segmented" if message == "Done" else message
        ),
        cancelEvent=cancel,
    )
    result.attach_source(source)
    return node, result, source


def _write_case_outputs(
    scene: Any,
    node: Any,
    result: Any,
    source: dict[str, Any],
    path: Path,
    name: str,
    folder: Path,
    formats: list[str],
) -> dict[str, Any]:
    """Write a case's outputs and its ``formats`` exports into ``folder``; returns the report
    (not written yet)."""
    from ..io.result_files import write_outputs
    from ..slicer import scene as mrml

    segmentation = scene.GetNodeByID(result.segmentationNodeID)
    ct = mrml.read_volume_node(node)[0]
    report = write_outputs(result, ct, segmentation, folder, name, path)
    series = path if path.is_dir() else None
    if formats:
        from ..slicer.exports import export_results

        uid = source.get("seriesInstanceUID")
        export_results(scene, node, result, folder, formats, name, series, dicom_series_uid=uid)
    return report
