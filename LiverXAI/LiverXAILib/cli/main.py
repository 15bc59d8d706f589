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
downloads and imports catalog models (see cli_training.py and cli_models.py); ``crossval``
cross-validates a training recipe leaving one patient out (see crossval.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..constants import DEFAULT_MODEL, EXPLAINABLE_CLASSES
from ..errors import Cancelled, CheckpointError, InputError
from .models import add_models_parser, run_models
from .review import add_review_parser, run_review_calibration
from .segment import is_batch_input, run_single, segment_folder
from .training import (
    add_training_parsers,
    int_at_least,
    run_crossval,
    run_evaluate,
    run_train,
)
from .tuning import add_tuning_parser, run_tuning

SAMPLE_CT = (
    Path(__file__).resolve().parents[2] / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
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
    from ..explain.methods import METHODS

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
    from ..slicer.exports import ExportError, check_formats

    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return check_formats(text.split(","))
    except ExportError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_segment_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``segment`` and ``demo``, in the order ``--help`` lists them."""
    _add_model_options(parser)
    _add_explanation_options(parser)
    _add_output_options(parser)
    _add_input_options(parser)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """Where the outputs go, and the model and device that make them."""
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalog name or checkpoint path")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _add_explanation_options(parser: argparse.ArgumentParser) -> None:
    """What is explained and how, and the uncertainty estimate."""
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
    parser.add_argument(
        "--ig-steps", default=32, type=int_at_least(1), help="Integrated Gradients steps"
    )
    parser.add_argument(
        "--ig-baseline",
        default=-1000.0,
        type=_baseline,
        help="Integrated Gradients baseline: a value in HU (default -1000, air) or 'blurred'",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """Files written besides the standard outputs: exports and the 3D snapshot."""
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


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    """How the input is read and run: slices per pass, DICOM series, non-HU values."""
    parser.add_argument(
        "--batch-size",
        default=16,
        type=int_at_least(1),
        help="slices per forward pass (an upper bound on the CPU)",
    )
    parser.add_argument(
        "--dicom-series",
        default=None,
        metavar="UID",
        help="DICOM folder holding several series: the SeriesInstanceUID to segment "
        "(default: the CT series chosen by the rule in the documentation; it is named in the "
        "report)",
    )
    parser.add_argument(
        "--allow-non-hu",
        action="store_true",
        help="run even if the values do not look like Hounsfield units",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m LiverXAILib", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected failure, show the full Python traceback (for bug reports)",
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
    add_tuning_parser(commands)
    add_review_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 0 done, 1 failed or interrupted (nothing half-made is
    left), 2 unusable input or options (refused before any work)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "segment":
            if is_batch_input(args.input):
                return segment_folder(args, args.input)
            return run_single(args, args.input)
        if args.command == "demo":
            status = run_single(args, SAMPLE_CT, save_scene=True)
            if status == 0:
                print(f"Outputs written to {args.out}")
            return status
        if args.command == "train":
            run_train(args)
        elif args.command == "crossval":
            return run_crossval(args)
        elif args.command == "crossval-tune":
            return run_tuning(args)
        elif args.command == "review-calibrate":
            return run_review_calibration(args)
        elif args.command == "evaluate":
            run_evaluate(args)
        elif args.command == "models":
            run_models(args)
    except (InputError, CheckpointError, Cancelled, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
