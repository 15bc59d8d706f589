"""``python -m LiverXAILib train | evaluate``: train a network and score trained models.

``train`` trains a slice network on a LiTS / MSD folder, a CSV of cases or explicit cases
(JSON-line progress); ``evaluate`` writes the papers' metrics tables for one or more models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .augmentation import AUGMENTATIONS, DEFAULT_AUGMENTATIONS, parse_augmentations
from .errors import CheckpointError, InputError
from .losses import LOSSES


def add_training_parsers(commands: Any) -> None:
    """Add the ``train`` and ``evaluate`` commands."""
    from .networks import available_models
    from .training import SCHEDULES

    train = commands.add_parser(
        "train",
        help="train a network on a LiTS/MSD folder or a CSV of cases",
        description="Train a slice network. Architectures: "
        + ", ".join(available_models())
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
    train.add_argument("--arch", default="unet", choices=available_models())
    train.add_argument(
        "--arch-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture argument, e.g. variant=paper for transunet (JSON values)",
    )
    train.add_argument("--out", required=True, type=Path)
    train.add_argument("--epochs", default=50, type=int)
    train.add_argument("--batch-size", default=16, type=int, help="global batch size")
    train.add_argument("--lr", default=1e-3, type=float)
    train.add_argument("--schedule", default="none", choices=SCHEDULES)
    train.add_argument("--size", default=128, type=int, choices=[128, 256])
    train.add_argument("--slices", default=1, type=int, choices=[1, 3, 5])
    train.add_argument("--loss", default="dicece", choices=LOSSES)
    train.add_argument(
        "--class-weights",
        default="1,1,3",
        type=_floats,
        help="background,liver,tumour weights of the loss (default 1,1,3)",
    )
    train.add_argument("--patience", default=15, type=int, help="early-stopping patience")
    train.add_argument(
        "--augment",
        default=",".join(DEFAULT_AUGMENTATIONS),
        type=_augmentations,
        help=f"comma-separated: {','.join(AUGMENTATIONS)}, or none",
    )
    train.add_argument(
        "--keep-empty",
        default=0.2,
        type=float,
        help="fraction of slices without liver that are kept (default 0.2)",
    )
    train.add_argument("--validation-fraction", default=0.15, type=float)
    train.add_argument("--test-fraction", default=0.15, type=float)
    train.add_argument("--split-seed", default=0, type=int)
    train.add_argument("--seed", default=0, type=int)
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--workers", default=0, type=int, help="data-loading processes")
    train.add_argument("--cache", type=Path, help="slice cache folder (default ~/.cache/liverxai)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.add_argument("--register", default="", metavar="NAME", help="list best.pt as model NAME")
    train.add_argument("--notes", default="")

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate trained models and write metrics.md / metrics.csv",
        description="Evaluate one or more models (catalog names or checkpoints; architectures: "
        + ", ".join(available_models())
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
    evaluate.add_argument("--figure-slices", default=4, type=int)
    evaluate.add_argument(
        "--no-postprocess", action="store_true", help="score the raw network labels"
    )


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas: {text}") from error
    if len(values) != 3:
        raise argparse.ArgumentTypeError("give three weights: background,liver,tumour")
    return values


def _augmentations(text: str) -> tuple[str, ...]:
    try:
        return parse_augmentations(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _architecture_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise InputError(f"--arch-option {pair!r}: use KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def run_train(args: argparse.Namespace) -> None:
    """Carry out ``train``."""
    from .data import Case
    from .training import TrainConfig, json_log, train

    config = TrainConfig(
        out_dir=args.out,
        data=args.data,
        train_cases=[Case(Path(i), Path(label)) for i, label in args.case or []],
        validation_cases=[Case(Path(i), Path(label)) for i, label in args.validation_case],
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        architecture=args.arch,
        architecture_kwargs=_architecture_options(args.arch_option),
        input_size=(args.size, args.size),
        num_slices=args.slices,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        schedule=args.schedule,
        loss=args.loss,
        class_weights=args.class_weights,
        keep_empty_fraction=args.keep_empty,
        augmentations=args.augment,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
        cache_dir=args.cache,
        resume=args.resume,
        register_as=args.register,
        notes=args.notes,
    )
    try:
        train(config)
    except (InputError, CheckpointError, ValueError) as error:
        json_log({"event": "error", "message": str(error)})
        raise


def run_evaluate(args: argparse.Namespace) -> None:
    """Carry out ``evaluate``."""
    from .data import DataSplit, discover_cases
    from .evaluation import evaluate_models
    from .evaluation_report import write_report
    from .training import json_log

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
