"""``python -m LiverXAILib train | crossval | evaluate``: train networks and score them.

``train`` trains a slice network on a LiTS / MSD folder, a CSV of cases or explicit cases
(JSON-line progress); ``crossval`` cross-validates a training recipe leaving one patient out
(see crossval.py); ``evaluate`` writes the papers' metrics tables for one or more models.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, InputError
from ..training.options import (
    ARCHITECTURES,
    AUGMENTATIONS,
    CACHE_DEFAULT_TEXT,
    DEFAULT_AUGMENTATIONS,
    DEVICES,
    INPUT_SIZES,
    LOSSES,
    SCHEDULES,
    SLICE_COUNTS,
    default_cache_dir,
)
from .option_types import (
    architecture_options,
    augmentations,
    checked,
    choices,
    floats,
    folds,
    int_at_least,
)

# Nothing here imports torch: ``--help`` must answer at once. The choices come from
# ``training_options`` (kept equal to the registries by a test) and every value is checked by
# the same ``option_problem`` as the Training module's options and the trainer's config
# (``option_types.py``).


def _add_train_parser(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train a network on a LiTS/MSD folder or a CSV of cases",
        description="Train a slice network. Architectures: "
        + ", ".join(ARCHITECTURES)
        + ". Progress is printed as JSON lines; OUT receives best.pt, last.pt, history.csv, "
        "curves.png and split.json. Create OUT/STOP to stop after the current step.",
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", type=Path, help="LiTS folder, MSD task folder or CSV (image,label[,patient])"
    )
    source.add_argument(
        "--case",
        nargs=2,
        action="append",
        metavar=("IMAGE", "LABEL"),
        help="an explicit training case instead of --data (repeat for more)",
    )
    train.add_argument(
        "--validation-case",
        nargs=2,
        action="append",
        metavar=("IMAGE", "LABEL"),
        default=[],
        help="with --case: a validation case (repeat); default: select on the training slices",
    )
    train.add_argument("--out", required=True, type=Path)
    _add_recipe_options(train)
    number = "a number"
    train.add_argument(
        "--validation-fraction",
        default=0.15,
        type=checked("validation_fraction", float, number),
        help="in [0, 1) (default 0.15)",
    )
    train.add_argument(
        "--test-fraction",
        default=0.15,
        type=checked("test_fraction", float, number),
        help="in [0, 1) (default 0.15)",
    )
    train.add_argument("--split-seed", default=0, type=int)
    _add_run_options(train)
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument(
        "--keep-going",
        action="store_true",
        help="leave out cases whose label does not fit their CT (logged) instead of stopping",
    )
    train.add_argument("--register", default="", metavar="NAME", help="list best.pt as model NAME")
    train.add_argument("--notes", default="")


def _add_recipe_options(
    parser: Any,
    patience: int | None = 15,
    patience_help: str = "early stopping after this many epochs without improvement (>= 1; "
    "default 15)",
) -> None:
    """The options that shape the trained network (``train`` and ``crossval``)."""
    integer, number = "an integer", "a number"
    parser.add_argument(
        "--arch",
        default="unet",
        type=checked("arch", str, "a name"),
        metavar=choices(ARCHITECTURES),
    )
    parser.add_argument(
        "--arch-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture argument, e.g. variant=paper for transunet (JSON values)",
    )
    parser.add_argument("--epochs", default=50, type=checked("epochs", int, integer), help=">= 1")
    parser.add_argument(
        "--batch-size",
        default=16,
        type=checked("batch_size", int, integer),
        help="global batch size (>= 1)",
    )
    parser.add_argument("--lr", default=1e-3, type=checked("lr", float, number), help="> 0")
    parser.add_argument(
        "--schedule",
        default="none",
        type=checked("schedule", str, "a name"),
        metavar=choices(SCHEDULES),
    )
    _add_input_and_loss_options(parser, patience, patience_help)


def _add_input_and_loss_options(parser: Any, patience: int | None, patience_help: str) -> None:
    integer, number = "an integer", "a number"
    parser.add_argument(
        "--size", default=128, type=checked("size", int, integer), metavar=choices(INPUT_SIZES)
    )
    parser.add_argument(
        "--slices", default=1, type=checked("slices", int, integer), metavar=choices(SLICE_COUNTS)
    )
    parser.add_argument(
        "--slice-step-mm",
        default=None,
        type=checked("slice_step_mm", float, number),
        help="with --slices 3 or 5: take the neighbour slices this many mm apart, "
        "interpolated between slices, so that scans of any slice spacing give the network "
        "the same anatomy (default: the adjacent slices)",
    )
    parser.add_argument(
        "--loss", default="dicece", type=checked("loss", str, "a name"), metavar=choices(LOSSES)
    )
    parser.add_argument(
        "--class-weights",
        default=(1.0, 1.0, 3.0),
        type=checked("class_weights", floats, "numbers separated by commas"),
        help="background,liver,tumour weights of the loss: three numbers >= 0, not all zero "
        "(default 1,1,3)",
    )
    parser.add_argument(
        "--patience", default=patience, type=checked("patience", int, integer), help=patience_help
    )
    parser.add_argument(
        "--augment",
        default=DEFAULT_AUGMENTATIONS,
        type=augmentations,
        help=f"comma-separated: {','.join(AUGMENTATIONS)}, or none "
        f"(default {','.join(DEFAULT_AUGMENTATIONS)})",
    )
    parser.add_argument(
        "--keep-empty",
        default=0.2,
        type=checked("keep_empty", float, number),
        help="fraction of slices without liver that are kept, in [0, 1] (default 0.2)",
    )
    parser.add_argument(
        "--tumour-share",
        dest="tumor_share",
        default=None,
        type=checked("tumor_share", float, number),
        help="draw this share of each epoch's slices from slices with tumour, in (0, 1) "
        "(default: as they come)",
    )


def _add_run_options(parser: Any) -> None:
    """Seed, device, data-loading processes and slice cache (``train`` and ``crossval``)."""
    integer = "an integer"
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument(
        "--device", default="auto", type=checked("device", str, "a name"), metavar=choices(DEVICES)
    )
    parser.add_argument(
        "--workers",
        default=0,
        type=checked("workers", int, integer),
        help="data-loading processes (>= 0; default 0)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help=f"slice cache folder (default: {CACHE_DEFAULT_TEXT}; here {default_cache_dir()})",
    )


def _add_crossval_parser(commands: Any) -> None:
    crossval = commands.add_parser(
        "crossval",
        help="leave-one-patient-out cross-validation of a training recipe (resumable)",
        description="Leave-one-patient-out cross-validation: for each patient of --data (the "
        "CSV's patient column; one fold per patient) train on all other patients into "
        "OUT/fold-<patient>/ and score that model on the held-out patient's cases alone "
        "(OUT/fold-<patient>/result.json). No validation case is used: each fold trains for "
        "the fixed --epochs and its last.pt is scored (--select best: best.pt, chosen on the "
        "training slices). OUT/metrics.md, metrics.csv and per_case.csv are rewritten after "
        "every fold (folds not done read 'pending'). --resume skips finished folds, continues "
        "an interrupted one from its last.pt and refuses a changed recipe. Create OUT/STOP "
        "or press Ctrl-C to stop cleanly. Exit status: 0 all chosen folds done, 1 stopped or a "
        "fold failed with --keep-going, 2 unusable data or options, or a failed fold.",
    )
    crossval.add_argument(
        "--data",
        type=Path,
        required=True,
        help="CSV (image,label[,case][,patient]), LiTS folder or MSD task folder",
    )
    crossval.add_argument("--out", required=True, type=Path)
    _add_recipe_options(
        crossval,
        patience=None,
        patience_help="stop a fold after this many epochs without improvement on its training "
        "slices (>= 1; default: never, every fold trains --epochs)",
    )
    crossval.add_argument(
        "--select",
        default="last",
        choices=["last", "best"],
        help="model scored per fold: last.pt (default) or best.pt (best on the training slices)",
    )
    crossval.add_argument(
        "--folds",
        default=None,
        type=folds,
        metavar="all|P1,P2,...",
        help="the held-out patients to run now (default all; the others stay pending)",
    )
    _add_run_options(crossval)
    crossval.add_argument(
        "--resume", action="store_true", help="continue a run in OUT (same recipe)"
    )
    crossval.add_argument(
        "--keep-going",
        action="store_true",
        help="record a failed fold (or a case whose label does not fit its CT) and go on",
    )
    crossval.add_argument(
        "--no-postprocess", action="store_true", help="score the raw network labels"
    )


def add_training_parsers(commands: Any) -> None:
    """Add the ``train``, ``crossval`` and ``evaluate`` commands (imports nothing heavy)."""
    _add_train_parser(commands)
    _add_crossval_parser(commands)
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate trained models and write metrics.md / metrics.csv",
        description="Evaluate one or more models (catalog names or checkpoints; architectures: "
        + ", ".join(ARCHITECTURES)
        + ") on every case of --data, or on one part of a training split.",
    )
    evaluate.add_argument("--model", action="append", required=True, help="repeat for more")
    evaluate.add_argument("--data", type=Path, help="LiTS folder, MSD task folder or CSV")
    evaluate.add_argument("--split", type=Path, help="a training run's split.json")
    evaluate.add_argument(
        "--part", default="test", choices=["train", "validation", "test", "all"], help="of --split"
    )
    evaluate.add_argument("--out", required=True, type=Path)
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    evaluate.add_argument("--figure-slices", default=4, type=int_at_least(0))
    evaluate.add_argument(
        "--no-postprocess", action="store_true", help="score the raw network labels"
    )


def run_train(args: argparse.Namespace) -> None:
    """Carry out ``train``."""
    from ..training.cases import Case
    from ..training.trainer import TrainConfig, json_log, train

    config = TrainConfig(
        out_dir=args.out,
        data=args.data,
        train_cases=[Case(Path(i), Path(label)) for i, label in args.case or []],
        validation_cases=[Case(Path(i), Path(label)) for i, label in args.validation_case],
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        architecture=args.arch,
        architecture_kwargs=architecture_options(args.arch_option),
        input_size=(args.size, args.size),
        num_slices=args.slices,
        slice_step_mm=args.slice_step_mm,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        schedule=args.schedule,
        loss=args.loss,
        class_weights=args.class_weights,
        keep_empty_fraction=args.keep_empty,
        tumor_share=args.tumor_share,
        augmentations=args.augment,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
        cache_dir=args.cache,
        resume=args.resume,
        keep_going=args.keep_going,
        register_as=args.register,
        notes=args.notes,
    )
    try:
        train(config)
    except (InputError, CheckpointError, ValueError) as error:
        json_log({"event": "error", "message": str(error)})
        raise


def run_crossval(args: argparse.Namespace) -> int:
    """Carry out ``crossval``; returns the exit status (0 done, 1 stopped or a fold failed)."""
    from ..evaluation.crossval import CrossvalConfig
    from ..evaluation.crossval import run_crossval as crossval
    from ..training.trainer import json_log

    config = CrossvalConfig(
        data=args.data,
        out_dir=args.out,
        training={
            "architecture": args.arch,
            "architecture_kwargs": architecture_options(args.arch_option),
            "input_size": (args.size, args.size),
            "num_slices": args.slices,
            "slice_step_mm": args.slice_step_mm,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "schedule": args.schedule,
            "loss": args.loss,
            "class_weights": args.class_weights,
            "keep_empty_fraction": args.keep_empty,
            "tumor_share": args.tumor_share,
            "augmentations": args.augment,
            "patience": args.patience,
            "seed": args.seed,
        },
        select=args.select,
        postprocess=not args.no_postprocess,
        folds=args.folds,
        resume=args.resume,
        keep_going=args.keep_going,
        device=args.device,
        workers=args.workers,
        cache_dir=args.cache,
    )
    try:
        return crossval(config)
    except (InputError, CheckpointError, ValueError) as error:
        json_log({"event": "error", "message": str(error)})
        raise


def run_evaluate(args: argparse.Namespace) -> None:
    """Carry out ``evaluate``."""
    from ..evaluation.evaluate import evaluate_models
    from ..evaluation.report import write_report
    from ..training.cases import DataSplit, discover_cases
    from ..training.trainer import json_log

    if args.split is not None:
        cases = DataSplit.read(args.split).part(args.part)
    elif args.data is not None:
        cases = discover_cases(args.data)
    else:
        raise InputError("evaluate needs --data or --split.")
    if not cases:
        raise InputError(f"No cases to evaluate (part {args.part!r} of {args.split} is empty).")
    evaluations = evaluate_models(
        args.model,
        cases,
        device=args.device,
        postprocess=not args.no_postprocess,
        figure_slices=args.figure_slices,
        progress=json_log,
    )
    files = write_report(evaluations, args.out)
    json_log({"event": "done", **{f"{k}": str(v) for k, v in files.items()}})
    print(Path(files["metrics_md"]).read_text(encoding="utf-8") if "metrics_md" in files else "")
