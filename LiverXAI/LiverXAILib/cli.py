"""Headless commands: ``python -m LiverXAILib segment | demo | train | evaluate | models``.

``segment`` reads a CT (NIfTI, NRRD or a DICOM series folder), runs the same
``LiverXAILogic`` as the Slicer module on a headless MRML scene (slicer-core), and writes
``STEM_label.nii.gz``, ``STEM_<method>_<class>.nii.gz`` (``gradcam``, ``gradcampp``, ``ig``),
``STEM_uncertainty.nii.gz``, ``STEM.seg.nrrd``, ``STEM_report.json``, ``STEM_report.html`` and
``STEM_overview.png``. Given a folder of cases (NIfTI/NRRD files, DICOM series sub-folders)
it writes those files to ``OUT/<case>/`` for each case with one loaded model, plus
``OUT/summary.csv``; cases already done are skipped unless ``--overwrite`` (see batch.py).
``demo`` does that for the bundled sample CT and also saves the scene as ``scene.mrb``.
``train`` trains a network on a LiTS / MSD folder or a CSV of cases (JSON-line progress);
``evaluate`` writes the papers' metrics tables for one or more models; ``models`` lists,
downloads and imports catalog models (see cli_training.py and cli_models.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from .cli_models import add_models_parser, run_models
from .cli_training import add_training_parsers, run_evaluate, run_train
from .constants import DEFAULT_MODEL, EXPLAINABLE_CLASSES
from .errors import CheckpointError, InputError

SAMPLE_CT = (
    Path(__file__).resolve().parents[1] / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
)


def _explain_classes(text: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    names = [name.strip().lower().replace("tumour", "tumor") for name in text.split(",")]
    unknown = [name for name in names if name not in EXPLAINABLE_CLASSES]
    if unknown:
        raise argparse.ArgumentTypeError(f"cannot explain {unknown}; choose from liver,tumor")
    return names


def _methods(text: str) -> list[str]:
    from .explain import METHODS

    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {unknown}; choose from {list(METHODS)}"
        )
    return names


def _baseline(text: str) -> float | str:
    if text.strip().lower() == "blurred":
        return "blurred"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a value in HU or 'blurred'") from None


def _export_formats(text: str) -> tuple[str, ...]:
    from .exports import ExportError, check_formats

    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return check_formats(text.split(","))
    except ExportError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _progress(fraction: float, message: str) -> None:
    """Progress on stderr: one updating line on a terminal, plain lines in a log."""
    if sys.stderr.isatty():
        print(f"\r[{fraction * 100:5.1f}%] {message:<40}", end="", file=sys.stderr, flush=True)
    else:
        print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def segment_file(args: argparse.Namespace, input_path: Path, save_scene: bool = False) -> dict:
    """Segment & Explain one file into ``args.out``; returns the report dictionary."""
    from .headless import create_headless_application
    from .logic import LiverXAILogic
    from .outputs import write_json, write_outputs
    from .scene import add_volume_from_array
    from .volume_io import read_volume, volume_stem

    started = time.perf_counter()
    array, ijk_to_ras = read_volume(input_path)
    app = create_headless_application()
    stem = volume_stem(input_path)
    input_node = add_volume_from_array(app.scene, array, ijk_to_ras, stem)
    logic = LiverXAILogic(app.scene, app.appLogic)
    result = logic.segmentAndExplain(
        input_node, progressCallback=_progress, **_segment_options(args)
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    report = write_outputs(app.scene, input_node, result, Path(args.out), stem, input_path)
    if args.export:
        from .exports import export_results

        export_results(
            app.scene,
            input_node,
            result,
            Path(args.out),
            args.export,
            stem=stem,
            dicom_series_dir=input_path if input_path.is_dir() else None,
        )
    if args.snapshot_3d:
        from .display3d import segmentation_bounds
        from .render3d import render_3d_view

        logic.setVolumeRendering(result, True)
        segmentation = app.scene.GetNodeByID(result.segmentationNodeID)
        bounds = segmentation_bounds(segmentation)
        render_3d_view(app.scene, app.appLogic, Path(args.out) / f"{stem}_3d.png", bounds)
    if save_scene:
        # MRML writes a bundle only under an absolute folder: "demo-output" would fail
        scene_path = Path(args.out).resolve() / "scene.mrb"
        # Slicer names the bundle's folder after the file, so write "scene.mrb" in a private
        # temporary folder beside the target, then move it into place.
        with tempfile.TemporaryDirectory(dir=scene_path.parent, prefix=".scene-") as folder:
            temporary = Path(folder) / scene_path.name
            if not app.scene.WriteToMRB(str(temporary)):
                raise RuntimeError(f"Saving the scene to {scene_path} failed.")
            os.replace(temporary, scene_path)
    report["timings"]["command_total"] = time.perf_counter() - started
    report["peak_rss_mb"] = _peak_rss_mb()
    write_json(Path(args.out) / f"{stem}_report.json", report)
    print(result.summary())
    return report


def _segment_options(args: argparse.Namespace) -> dict:
    """``segmentAndExplain`` keyword arguments from the segment / demo options."""
    return {
        "model": args.model,
        "device": args.device,
        "explainClasses": args.explain,
        "batchSize": args.batch_size,
        "allowNonHU": args.allow_non_hu,
        "explainMethods": args.methods,
        "camLayer": args.layer,
        "uncertainty": args.uncertainty,
        "integratedGradientsSteps": args.ig_steps,
        "integratedGradientsBaseline": args.ig_baseline,
    }


def is_batch_input(path: Path) -> bool:
    """A folder of cases: a folder that does not itself hold a DICOM series."""
    from .batch_cases import has_dicom_series

    return path.is_dir() and not has_dicom_series(path)


def segment_folder(args: argparse.Namespace, input_dir: Path) -> int:
    """Segment & Explain every case of a folder into ``args.out/<case>/`` with one loaded
    model; prints the summary table. Returns 0 if every case is done (now or by an earlier
    run), 1 if any failed or the run was cancelled. Ctrl-C or SIGTERM cancels after cleaning
    up the case in progress; a second Ctrl-C stops at once (still leaving no partial case)."""
    import signal
    import threading

    from .batch import process_files
    from .batch_cases import find_cases
    from .headless import create_headless_application
    from .logic import LiverXAILogic

    cases = find_cases(input_dir)
    app = create_headless_application()
    logic = LiverXAILogic(app.scene, app.appLogic)
    cancel = threading.Event()
    previous = {}

    def on_signal(number, _frame) -> None:
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once
        name = signal.Signals(number).name
        print(f"\n{name}: stopping after cleaning up the current case", file=sys.stderr)

    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, on_signal)
    try:
        result = process_files(
            logic,
            cases,
            args.out,
            progress=_progress,
            cancel=cancel,
            overwrite=args.overwrite,
            export_formats=args.export,
            **_segment_options(args),
        )
    except KeyboardInterrupt:
        print(f"\nInterrupted; no partial case was left in {args.out}", file=sys.stderr)
        return 130
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
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


def _add_segment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalog name or checkpoint path")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--explain",
        default="liver,tumor",
        type=_explain_classes,
        help="classes to explain with Grad-CAM: liver,tumor | liver | tumor | none",
    )
    parser.add_argument(
        "--methods",
        default="gradcam",
        type=_methods,
        help="explanation methods, comma-separated: gradcam, gradcam++, integrated-gradients "
        "(Integrated Gradients is slow; its estimated time is printed before it starts)",
    )
    parser.add_argument(
        "--layer", default=None, help="Grad-CAM layer (dotted module name; default: the model's)"
    )
    parser.add_argument(
        "--uncertainty",
        default="tta",
        choices=["tta", "mc-dropout", "none"],
        help="per-voxel uncertainty: test-time augmentation (default), Monte Carlo dropout, none",
    )
    parser.add_argument("--ig-steps", default=32, type=int, help="Integrated Gradients steps")
    parser.add_argument(
        "--ig-baseline",
        default=-1000.0,
        type=_baseline,
        help="Integrated Gradients baseline: a value in HU (default -1000, air) or 'blurred'",
    )
    parser.add_argument(
        "--export",
        default=(),
        type=_export_formats,
        help="also export: nrrd (volumes), stl, obj (surfaces, LPS), dicom-seg (needs a DICOM "
        "series input), nifti; comma-separated",
    )
    parser.add_argument(
        "--snapshot-3d",
        action="store_true",
        help="render the 3D view offscreen to STEM_3d.png (single case; needs OpenGL/EGL)",
    )
    parser.add_argument("--batch-size", default=16, type=int)
    parser.add_argument(
        "--allow-non-hu",
        action="store_true",
        help="run even if the values do not look like Hounsfield units",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m LiverXAILib", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    segment = commands.add_parser(
        "segment",
        help="segment and explain a CT file, a DICOM folder, or a folder of cases",
        description="Segment and explain one CT (written to OUT) or every case of a folder "
        "(NIfTI/NRRD files and DICOM series sub-folders, each written to OUT/<case>/, with "
        "OUT/summary.csv). Exit status: 0 all cases done or skipped, 1 a case failed or the run "
        "was cancelled, 2 unusable input or options.",
    )
    segment.add_argument(
        "input",
        type=Path,
        help="NIfTI/NRRD file, DICOM series folder, or folder of cases (files and series folders)",
    )
    _add_segment_options(segment)
    segment.add_argument(
        "--overwrite",
        action="store_true",
        help="folder of cases: redo cases already done (default: skip them)",
    )
    demo = commands.add_parser("demo", help="segment and explain the bundled sample CT")
    _add_segment_options(demo)
    add_models_parser(commands)
    add_training_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import Cancelled

    args = build_parser().parse_args(argv)
    try:
        if args.command == "segment":
            if is_batch_input(args.input):
                return segment_folder(args, args.input)
            segment_file(args, args.input)
        elif args.command == "demo":
            segment_file(args, SAMPLE_CT, save_scene=True)
            print(f"Outputs written to {args.out}")
        elif args.command == "train":
            run_train(args)
        elif args.command == "evaluate":
            run_evaluate(args)
        elif args.command == "models":
            run_models(args)
    except (InputError, CheckpointError, Cancelled, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
