"""``python -m LiverXAILib segment | demo``: one CT, or every case of a folder.

A single case is checked before the work starts (output folder, export formats, the input's
values and geometry), run with Ctrl-C/SIGTERM as a cancel, and written all or nothing: the
files go into a private folder inside ``--out`` and move into place together, the report
last. A folder of cases goes through the batch runner (batch.py), one case folder each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import Cancelled, CheckpointError, InputError
from ..options import SegmentAndExplainOptions


def _progress(fraction: float, message: str) -> None:
    """Progress on stderr: one updating line on a terminal, plain lines in a log."""
    if sys.stderr.isatty():
        print(f"\r[{fraction * 100:5.1f}%] {message:<40}", end="", file=sys.stderr, flush=True)
    else:
        print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def segment_file(
    args: argparse.Namespace,
    input_path: Path,
    save_scene: bool = False,
    cancel: threading.Event | None = None,
) -> dict:
    """Segment & Explain one file into ``args.out``; returns the report dictionary.

    Everything that can be checked is checked before the work starts (the output folder, the
    export formats for this input, the input's values and geometry). The outputs are written
    into a private folder and moved into ``args.out`` together at the end, the report last:
    a failure or a cancel (``cancel`` set, e.g. by Ctrl-C) leaves no output file behind.
    """
    from ..io.atomic import check_writable_folder, staged_folder
    from ..io.result_files import write_json, write_outputs
    from ..slicer.logic import LiverXAILogic
    from ..slicer.scene import read_volume_node

    started = time.perf_counter()
    out = Path(args.out)
    check_writable_folder(out)
    _check_exports_possible(args.export, input_path, args.dicom_series)
    app, input_node, stem, source = _load_input(input_path, args.dicom_series)
    logic = LiverXAILogic(app.scene, app.appLogic)
    result = logic.segmentAndExplain(
        input_node, segment_options(args), progressCallback=_progress, cancelEvent=cancel
    )
    result.attach_source(source)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    with staged_folder(out, last=f"{stem}_report.json") as staging:
        segmentation = app.scene.GetNodeByID(result.segmentationNodeID)
        ct = read_volume_node(input_node)[0]
        report = write_outputs(result, ct, segmentation, staging, stem, input_path)
        _stop_if_cancelled(cancel)
        if args.export:
            _export(app.scene, input_node, result, staging, args.export, stem, input_path, source)
            _stop_if_cancelled(cancel)
        if args.snapshot_3d:
            _snapshot_3d(app, logic, result, staging / f"{stem}_3d.png")
        if save_scene:
            _write_scene_bundle(app.scene, staging / "scene.mrb")
        report["timings"]["command_total"] = time.perf_counter() - started
        report["peak_rss_mb"] = _peak_rss_mb()
        write_json(staging / f"{stem}_report.json", report)
        _stop_if_cancelled(cancel)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.summary(warnings=False))
    return report


def _load_input(input_path: Path, series_uid: str | None) -> tuple[Any, Any, str, dict]:
    """Read the CT into a new headless application's scene; returns the application, the
    CT's volume node, the file-name stem (also the node's name) and where it was read from."""
    from ..io.volumes import read_volume_and_source, volume_stem
    from ..slicer.headless import create_headless_application
    from ..slicer.scene import add_volume_from_array

    array, ijk_to_ras, source = read_volume_and_source(input_path, series_uid)
    app = create_headless_application()
    stem = volume_stem(input_path)
    input_node = add_volume_from_array(app.scene, array, ijk_to_ras, stem)
    return app, input_node, stem, source


def _export(
    scene: Any,
    input_node: Any,
    result: Any,
    folder: Path,
    formats: tuple[str, ...],
    stem: str,
    input_path: Path,
    source: dict,
) -> None:
    """Write the ``--export`` formats into ``folder`` (file names start with ``stem``); a
    DICOM SEG references the series of the input folder the CT was read from (``source``)."""
    from ..slicer.exports import export_results

    export_results(
        scene,
        input_node,
        result,
        folder,
        formats,
        stem=stem,
        dicom_series_dir=input_path if input_path.is_dir() else None,
        dicom_series_uid=source.get("seriesInstanceUID"),
    )


def _snapshot_3d(app: Any, logic: Any, result: Any, path: Path) -> None:
    """Switch the result to volume rendering and render the 3D view offscreen to ``path``."""
    from ..slicer.display3d import segmentation_bounds
    from ..slicer.render3d import render_3d_view

    logic.setVolumeRendering(result, True)
    segmentation = app.scene.GetNodeByID(result.segmentationNodeID)
    bounds = segmentation_bounds(segmentation)
    render_3d_view(app.scene, app.appLogic, path, bounds)


def _check_exports_possible(
    formats: tuple[str, ...], input_path: Path, series_uid: str | None
) -> None:
    """Refuse an export that this input cannot give, before the pipeline runs."""
    if "dicom-seg" in formats:
        from ..slicer.export_checks import check_dicom_seg_export

        try:
            check_dicom_seg_export(input_path, series_uid)
        except ValueError as error:  # ExportError, DicomSegError: this input cannot give it
            raise InputError(str(error)) from None


def _stop_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("Segment & Explain was cancelled while writing its outputs.")


def _write_scene_bundle(scene: object, path: Path) -> None:
    """Save the scene as a Slicer bundle (.mrb) at ``path``, an absolute or relative path."""
    path = path.resolve()  # MRML writes a bundle only under an absolute folder
    # Slicer names the bundle's working folder after the file: write it in a private
    # temporary folder, then move the file into place.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".scene-") as folder:
        temporary = Path(folder) / path.name
        if not scene.WriteToMRB(str(temporary)):
            raise RuntimeError(f"Saving the scene to {path.name} failed.")
        os.replace(temporary, path)


def segment_options(args: argparse.Namespace) -> SegmentAndExplainOptions:
    """The Segment & Explain options of the segment / demo command line."""
    return SegmentAndExplainOptions(
        model=args.model,
        device=args.device,
        explainClasses=tuple(args.explain),
        batchSize=args.batch_size,
        allowNonHU=args.allow_non_hu,
        explainMethods=tuple(args.methods),
        camLayer=args.layer,
        uncertainty=args.uncertainty,
        integratedGradientsSteps=args.ig_steps,
        integratedGradientsBaseline=args.ig_baseline,
        exports=tuple(getattr(args, "export", None) or ()),
    )


def is_batch_input(path: Path) -> bool:
    """A folder of cases: a folder that does not itself hold a DICOM series."""
    from ..batch.cases import has_dicom_series

    return path.is_dir() and not has_dicom_series(path)


def segment_folder(args: argparse.Namespace, input_dir: Path) -> int:
    """Segment & Explain every case of a folder into ``args.out/<case>/`` with one loaded
    model; prints the summary table. Returns 0 if every case is done (now or by an earlier
    run), 1 if any failed or the run was cancelled. Ctrl-C or SIGTERM cancels after cleaning
    up the case in progress; a second Ctrl-C stops at once (still leaving no partial case)."""
    from ..batch.cases import find_cases
    from ..batch.runner import process_files
    from ..io.atomic import check_writable_folder
    from ..slicer.headless import create_headless_application
    from ..slicer.logic import LiverXAILogic
    from .interrupts import cancel_on_signals

    check_writable_folder(args.out)
    cases = find_cases(input_dir)
    app = create_headless_application()
    logic = LiverXAILogic(app.scene, app.appLogic)
    with cancel_on_signals("stopping after cleaning up the current case") as cancel:
        try:
            result = process_files(
                logic,
                cases,
                args.out,
                progress=_progress,
                cancel=cancel,
                overwrite=args.overwrite,
                options=segment_options(args),
            )
        except KeyboardInterrupt:
            print(f"\nInterrupted; no partial case was left in {args.out}", file=sys.stderr)
            return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(result.format_table())
    print(f"{result.describe()}; summary: {result.summary_path}")
    return 0 if result.ok else 1


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MB (None where ``resource`` is missing)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_single(args: argparse.Namespace, input_path: Path, save_scene: bool = False) -> int:
    """One case with Ctrl-C/SIGTERM as a cancel; a failure after the checks exits 1."""
    from .interrupts import cancel_on_signals

    nothing = f"no output was written to {args.out}"
    with cancel_on_signals() as cancel:
        try:
            segment_file(args, input_path, save_scene=save_scene, cancel=cancel)
        except (InputError, CheckpointError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except Cancelled:
            how = f"by {cancel.signal_name}" if cancel.signal_name else ""
            print(f"Interrupted {how}: {nothing}.".replace("  ", " "), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"Interrupted: {nothing}.", file=sys.stderr)
            return 1
        except Exception as error:  # noqa: BLE001 - one line for the user, then exit 1
            if args.traceback:
                raise
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(
                f"error: {reason} ({type(error).__name__}); {nothing}. Run with --traceback "
                "for the details.",
                file=sys.stderr,
            )
            return 1
    return 0
