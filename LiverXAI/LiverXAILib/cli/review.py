"""``python -m LiverXAILib review-calibrate``: the review score calibrated on a crossval run."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def add_review_parser(commands: Any) -> None:
    """Add the ``review-calibrate`` command (imports nothing heavy)."""
    calibrate = commands.add_parser(
        "review-calibrate",
        help="calibrate the review score by leave-one-patient-out on a crossval run",
        description="Run the product pipeline (Grad-CAM of liver and tumour, default "
        "uncertainty) with each fold's model (RUN/fold-<patient>/last.pt) on its held-out "
        "patient, compute each liver slice's review features and liver Dice, report the "
        "leave-one-patient-out AUC for slices with liver Dice < 0.8 and the precision at the "
        "threshold, and write the score fitted on every patient to --out (JSON). The per-slice "
        "rows are written beside it (OUT.csv); --rows reuses such a file instead of running "
        "the models again.",
    )
    calibrate.add_argument("--run", required=True, type=Path, help="a crossval output folder")
    calibrate.add_argument("--out", required=True, type=Path, help="the score's JSON file")
    calibrate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    calibrate.add_argument("--rows", type=Path, help="per-slice rows of an earlier calibration")
    calibrate.add_argument(
        "--layer",
        help="Grad-CAM layer of the folds' models (default: each checkpoint's measured layer, "
        "else the architecture's); calibrate at the layer the shipped model explains with",
    )
    calibrate.add_argument(
        "--methods",
        default="gradcam",
        help="comma-separated explanation methods; the first is the one the features read, "
        "more add the disagreement between methods (e.g. gradcam,integrated-gradients)",
    )


def run_review_calibration(args: argparse.Namespace) -> int:
    """Carry out ``review-calibrate``; prints the figures as Markdown."""
    from ..explain.review_calibration import calibrate, read_rows, run_rows, write_rows
    from ..io.atomic import atomic_path
    from ..training.trainer import json_log

    if args.rows is not None:
        rows = read_rows(args.rows)
    else:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        rows = run_rows(args.run, args.device, json_log, cam_layer=args.layer, methods=methods)
        write_rows(args.out.with_suffix(".csv"), rows)
    command = f"python -m LiverXAILib review-calibrate --run {args.run} --out {args.out}"
    if args.layer:
        command += f" --layer {args.layer}"
    if args.methods != "gradcam":
        command += f" --methods {args.methods}"
    model = calibrate(rows, args.run.name, command)
    with atomic_path(args.out, suffix=".json") as temporary:
        text = json.dumps(_json_ready(model.to_dict()), indent=2, allow_nan=False)
        Path(temporary).write_text(text + "\n", encoding="utf-8")
    print(markdown(model.calibration, model.threshold))
    return 0


def _json_ready(value: Any) -> Any:
    """NaN as None, floats to 6 significant decimals."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def _cell(value: Any) -> str:
    return "–" if value is None or not math.isfinite(float(value)) else f"{float(value):.2f}"


def markdown(calibration: dict[str, Any], threshold: float) -> str:
    """The calibration's figures as a Markdown table."""
    lopo = calibration["leaveOnePatientOut"]
    lines = [
        calibration["summary"],
        "",
        f"Threshold {threshold:.3f}: {calibration['threshold']}.",
        "",
        "| held-out case | slices | Dice < 0.8 | AUC | flagged | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in [*lopo["perCase"].items(), ("pooled", lopo["pooled"])]:
        lines.append(
            f"| {name} | {s['slices']} | {s['poorSlices']} | {_cell(s['auc'])} | "
            f"{s['flaggedShare']:.0%} | {_cell(s['precision'])} | {_cell(s['recall'])} |"
        )
    single = ", ".join(f"{k} {_cell(v)}" for k, v in calibration["singleFeatureAuc"].items())
    lines += ["", f"Each feature alone (pooled AUC): {single}."]
    rules = calibration.get("rulesAuc")
    if rules:
        per_case = ", ".join(f"{k} {_cell(v)}" for k, v in rules["perCase"].items())
        lines += [
            "",
            f"The fixed rules' list (highest severity per slice) for comparison: AUC "
            f"{_cell(rules['pooled'])} pooled; per case {per_case}.",
        ]
    return "\n".join(lines)
