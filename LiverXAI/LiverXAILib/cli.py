"""Headless commands: ``python -m LiverXAILib segment | demo | train``.

``segment`` reads a CT (NIfTI, NRRD or a DICOM series folder), runs the same
``LiverXAILogic`` as the Slicer module on a headless MRML scene (slicer-core), and writes
``STEM_label.nii.gz``, ``STEM_gradcam_<class>.nii.gz``, ``STEM.seg.nrrd``, ``STEM_report.json``
and ``STEM_overview.png``. ``demo`` does that for the bundled sample CT and also saves the
scene as ``scene.mrb``. ``train`` trains a network on CT + label volumes.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from .constants import DEFAULT_MODEL, EXPLAINABLE_CLASSES

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
        input_node,
        model=args.model,
        device=args.device,
        explainClasses=args.explain,
        batchSize=args.batch_size,
        allowNonHU=args.allow_non_hu,
        progressCallback=_progress,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    report = write_outputs(app.scene, input_node, result, Path(args.out), stem, input_path)
    if save_scene:
        scene_path = Path(args.out) / "scene.mrb"
        # Slicer names the bundle's folder after the file, so write "scene.mrb" in a private
        # temporary folder beside the target, then move it into place.
        with tempfile.TemporaryDirectory(dir=args.out, prefix=".scene-") as folder:
            temporary = Path(folder) / scene_path.name
            if not app.scene.WriteToMRB(str(temporary)):
                raise RuntimeError(f"Saving the scene to {scene_path} failed.")
            os.replace(temporary, scene_path)
    report["timings"]["command_total"] = time.perf_counter() - started
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json(Path(args.out) / f"{stem}_report.json", report)
    print(result.summary())
    return report


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
    parser.add_argument("--batch-size", default=16, type=int)
    parser.add_argument(
        "--allow-non-hu",
        action="store_true",
        help="run even if the values do not look like Hounsfield units",
    )


def build_parser() -> argparse.ArgumentParser:
    from .networks import available_models

    parser = argparse.ArgumentParser(
        prog="python -m LiverXAILib", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    segment = commands.add_parser("segment", help="segment and explain a CT file or DICOM folder")
    segment.add_argument("input", type=Path, help="NIfTI/NRRD file or DICOM series folder")
    _add_segment_options(segment)
    demo = commands.add_parser("demo", help="segment and explain the bundled sample CT")
    _add_segment_options(demo)
    train = commands.add_parser(
        "train", help=f"train a network (architectures: {', '.join(available_models())})"
    )
    train.add_argument(
        "--case",
        nargs=2,
        action="append",
        metavar=("IMAGE", "LABEL"),
        required=True,
        help="a training case (repeat for more)",
    )
    train.add_argument(
        "--validation-case",
        nargs=2,
        action="append",
        metavar=("IMAGE", "LABEL"),
        default=[],
        help="a validation case (repeat); default: the training cases",
    )
    train.add_argument("--arch", default="unet", choices=available_models())
    train.add_argument("--out", required=True, type=Path)
    train.add_argument("--epochs", default=50, type=int)
    train.add_argument("--batch-size", default=16, type=int)
    train.add_argument("--lr", default=1e-3, type=float)
    train.add_argument("--size", default=128, type=int, choices=[128, 256])
    train.add_argument("--slices", default=1, type=int, choices=[1, 3, 5])
    train.add_argument("--loss", default="dicece", choices=["ce", "dicece"])
    train.add_argument("--patience", default=15, type=int)
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument("--seed", default=0, type=int)
    train.add_argument("--notes", default="")
    return parser


def run_train(args: argparse.Namespace) -> None:
    from .training import Case, TrainConfig, train

    config = TrainConfig(
        train_cases=[Case(Path(i), Path(label)) for i, label in args.case],
        validation_cases=[Case(Path(i), Path(label)) for i, label in args.validation_case],
        out_dir=args.out,
        architecture=args.arch,
        input_size=(args.size, args.size),
        num_slices=args.slices,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        loss=args.loss,
        patience=args.patience,
        augment=not args.no_augment,
        resume=args.resume,
        seed=args.seed,
        notes=args.notes,
    )
    print(f"best checkpoint: {train(config)}")


def main(argv: list[str] | None = None) -> int:
    from .errors import Cancelled, CheckpointError, InputError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "segment":
            segment_file(args, args.input)
        elif args.command == "demo":
            segment_file(args, SAMPLE_CT, save_scene=True)
            print(f"Outputs written to {args.out}")
        elif args.command == "train":
            run_train(args)
    except (InputError, CheckpointError, Cancelled, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
