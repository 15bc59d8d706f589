"""``python -m LiverXAILib crossval-tune``: tumour post-processing chosen from a crossval run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_tuning_parser(commands: Any) -> None:
    """Add the ``crossval-tune`` command (imports nothing heavy)."""
    tune = commands.add_parser(
        "crossval-tune",
        help="choose the tumour bias and minimum tumour size from a crossval run",
        description="Predict each fold's held-out patient with the fold's model, score a grid "
        "of tumour biases (log-odds added to the tumour class before the arg-max) and minimum "
        "tumour sizes (mL) like crossval does, and choose by pooled lesion F1 (then mean "
        "tumour Dice): nested (chosen without the patient it is applied to) and on all "
        "patients. Writes RUN/postprocessing.md, postprocessing.json and "
        "postprocessing_grid.csv. With --apply, write a copy of a model (e.g. the recipe trained "
        "on all patients) to --to with the setting chosen on all patients in its metadata.",
    )
    tune.add_argument("--run", required=True, type=Path, help="a crossval output folder")
    tune.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    tune.add_argument("--apply", type=Path, metavar="MODEL", help="a checkpoint (.pt) to tune")
    tune.add_argument("--to", type=Path, metavar="OUT", help="where --apply writes (.pt)")


def run_tuning(args: argparse.Namespace) -> int:
    """Carry out ``crossval-tune``; prints the Markdown answer."""
    if (args.apply is None) != (args.to is None):
        raise SystemExit("crossval-tune: --apply and --to go together")
    from ..evaluation.crossval_tuning import apply_setting, chosen_setting, markdown, tune
    from ..training.trainer import json_log

    if args.apply is not None:
        if not (args.run / "postprocessing.json").is_file():
            tune(args.run, device=args.device, log=json_log)
        setting = chosen_setting(args.run)
        apply_setting(args.apply, args.to, setting, f"crossval-tune on {args.run.name}")
        json_log({"event": "applied", "model": str(args.to), **setting.__dict__})
        return 0
    result = tune(args.run, device=args.device, log=json_log)
    print(markdown(result))
    return 0
