"""``make bench``: how fast Segment & Explain is, against the model alone and a naive baseline.

Every row runs in this process on the same CT, ``--repeats`` times after a warm-up (rows
taken in turn, round-robin, so a slow phase of a shared machine hits all of them), and
reports the median and spread (min-max) of the wall time, slices per second and the peak
resident memory seen while the row ran and the minor page faults of a run (freshly mapped
memory the kernel zeroes on first touch). Rows:

1. pure model compute: the network's forward pass alone over the already preprocessed
   slices, at the best of several batch sizes;
2. our segment, and our segment + explain (Grad-CAM for liver and tumour), and the product's
   default (Grad-CAM + test-time-augmentation uncertainty): array in, arrays out
   (``pipeline.run_pipeline``: reorientation, windowing, resize, batched inference, inverse
   mapping, 3D clean-up, explanation measures);
3. the naive baseline (``naive_baseline.py``): one slice per forward pass, ``grad-cam``'s
   Grad-CAM one class per call;
4. the Logic on a slicer-core MRML scene (nodes, segmentation import, closed surfaces);
5. the product default with ``--previous-model`` (the former default model), so that a new
   default's cost is compared with the old one's in the same process.

Then a 600-slice volume tiled from the same CT runs in a fresh process for its peak memory.
Writes ``bench-results.json`` with the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverXAI"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from LiverXAILib.constants import DEFAULT_MODEL  # noqa: E402
from LiverXAILib.explain.methods import cam_layer  # noqa: E402
from LiverXAILib.io.volumes import read_volume  # noqa: E402
from LiverXAILib.models.batch_norm_folding import fold_batch_norm  # noqa: E402
from LiverXAILib.models.catalog import resolve_model  # noqa: E402
from LiverXAILib.models.checkpoints import load_checkpoint  # noqa: E402
from LiverXAILib.segment.inference import SliceInferenceEngine, choose_device, describe_device  # noqa: E402
from LiverXAILib.segment.orientation import canonical_orientation, canonical_spacing  # noqa: E402
from LiverXAILib.segment.pipeline import run_pipeline  # noqa: E402
from LiverXAILib.segment.uncertainty import UncertaintySpec  # noqa: E402
from measure import measure_rows  # noqa: E402

DEFAULT_CT = ROOT.parent / "shared" / "data" / "ircadb17" / "ct.nii.gz"
BUNDLED_CT = ROOT / "LiverXAI" / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"


def tiled(array: np.ndarray, depth: int) -> np.ndarray:
    """A (depth, rows, columns) volume from the CT's slices, mirrored back and forth."""
    order = np.concatenate([np.arange(array.shape[0]), np.arange(array.shape[0])[::-1]])
    indices = np.resize(order, depth)
    return np.ascontiguousarray(array[indices])


def pure_compute(model, inputs: torch.Tensor, device: torch.device, amp: bool) -> Callable:
    """The forward pass alone over preprocessed slices (on the device already)."""

    def run(batch_size: int, channels_last: bool) -> None:
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=memory_format)
        data = inputs.contiguous(memory_format=memory_format)
        with torch.inference_mode():
            autocast = torch.autocast("cuda", torch.float16) if amp else contextlib.nullcontext()
            with autocast:
                for first in range(0, data.shape[0], batch_size):
                    model(data[first : first + batch_size])
            if device.type == "cuda":
                torch.cuda.synchronize()

    return run


def best_configuration(
    run: Callable[[int, bool], None], sizes: list[int]
) -> tuple[tuple[int, bool], dict[str, float]]:
    """The fastest (batch size, channels-last) for the pure forward pass: the best of three
    timed runs per configuration, taken in turn, so one slow moment of a shared machine does
    not pick the batch size."""
    configurations = [(size, channels_last) for size in sizes for channels_last in (False, True)]
    for size, channels_last in configurations:
        run(size, channels_last)  # warm-up
    timings = {configuration: float("inf") for configuration in configurations}
    for _ in range(3):
        for size, channels_last in configurations:
            start = time.perf_counter()
            run(size, channels_last)
            seconds = time.perf_counter() - start
            timings[size, channels_last] = min(timings[size, channels_last], seconds)
    best = min(timings, key=timings.get)
    named = {f"{b}{' NHWC' if c else ''}": round(t, 2) for (b, c), t in timings.items()}
    return best, named


def scene_run(array: np.ndarray, matrix: np.ndarray, model: str, device: str, batch: int):
    from LiverXAILib.options import SegmentAndExplainOptions
    from LiverXAILib.slicer.headless import create_headless_application
    from LiverXAILib.slicer.logic import LiverXAILogic
    from LiverXAILib.slicer.previous_results import previous_outputs, remove_outputs
    from LiverXAILib.slicer.scene import add_volume_from_array

    app = create_headless_application()
    node = add_volume_from_array(app.scene, array, matrix, "bench")
    logic = LiverXAILogic(app.scene, app.appLogic)
    options = SegmentAndExplainOptions(model=model, device=device, batchSize=batch)

    def run() -> None:
        logic.segmentAndExplain(node, options)
        remove_outputs(app.scene, previous_outputs(app.scene, node))  # nodes, items, folder

    return run


def child_600(args: argparse.Namespace) -> None:
    """Fresh process: the product default (Grad-CAM + uncertainty) on a 600-slice volume."""
    array, matrix = read_volume(args.ct)
    array = tiled(array, args.slices)
    model, metadata = load_checkpoint(resolve_model(args.model))
    engine = SliceInferenceEngine(
        model,
        metadata.input_spec(),
        choose_device(args.device),
        args.batch,
        tumor_bias=metadata.tumor_bias,
        min_tumor_ml=metadata.min_tumor_ml,
    )
    start = time.perf_counter()
    run_pipeline(array, matrix, engine, (1, 2), ("gradcam",), UncertaintySpec())
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "ct_mb": array.nbytes / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ct", type=Path, default=DEFAULT_CT if DEFAULT_CT.exists() else BUNDLED_CT
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--previous-model",
        default="unet-demo",
        help="the former default model, for the default / previous-default row ('none': skip)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=0, help="engine batch size (0: tuned)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=2)
    parser.add_argument("--slices", type=int, default=600, help="slices of the scaling volume")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results.json")
    parser.add_argument(
        "--compile", action="store_true", help="add a row for the torch.compile'd network"
    )
    parser.add_argument("--child-600", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_600:
        child_600(args)
        return

    device = choose_device(args.device)
    array, matrix = read_volume(args.ct)
    depth = array.shape[0]
    model, metadata = load_checkpoint(resolve_model(args.model))
    model = model.to(device).eval()
    spec = metadata.input_spec()
    amp = device.type == "cuda"
    print(
        f"LiverXAI benchmark: {args.ct.name} {tuple(array.shape)}, model {args.model}, "
        f"{describe_device(args.device)}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, AMP {'on' if amp else 'off'}",
        flush=True,
    )
    orientation = canonical_orientation(matrix)
    canonical = orientation.apply(array)
    slice_mm = canonical_spacing(matrix, orientation)[0]
    inputs = spec.batch(canonical, list(range(depth)), slice_mm).to(device)
    # the practical limit: the same inference network the engine runs (BatchNorm folded)
    pure = pure_compute(fold_batch_norm(model), inputs, device, amp)
    as_trained = pure_compute(model, inputs, device, amp)
    sizes = [8, 16, 32, 64] if device.type == "cpu" else [16, 32, 64, 128, 256]
    (batch, channels_last), by_size = best_configuration(pure, sizes)
    batch = args.batch or batch
    print(f"  pure compute by batch size (NHWC = channels-last): {by_size}")
    layout = "channels-last" if channels_last else "contiguous"
    engine = SliceInferenceEngine(
        model,
        spec,
        device,
        batch,
        channels_last=channels_last,
        tumor_bias=metadata.tumor_bias,
        min_tumor_ml=metadata.min_tumor_ml,
    )
    print(
        f"  our engine runs batches of {engine.batch_size} (asked {batch}; CPU cap in cpu_batch.py)"
    )
    from naive_baseline import naive_segment_and_explain

    plain, _ = load_checkpoint(resolve_model(args.model))  # as loaded: no layout changes
    plain = plain.to(device).eval()
    layer = cam_layer(plain)  # the product's measured default layer (explain.py)
    repeats = args.repeats
    extra_rows = []
    if args.compile:  # does torch.compile beat the eager network? (compile time printed)
        start = time.perf_counter()
        compiled = pure_compute(torch.compile(fold_batch_norm(model)), inputs, device, amp)
        compiled(batch, channels_last)
        print(f"  torch.compile took {time.perf_counter() - start:.1f} s (first call)")
        extra_rows.append(
            ("pure compute, torch.compile", lambda: compiled(batch, channels_last), repeats)
        )
    if args.previous_model != "none":
        old_model, old_metadata = load_checkpoint(resolve_model(args.previous_model))
        old_engine = SliceInferenceEngine(
            old_model.to(device).eval(),
            old_metadata.input_spec(),
            device,
            batch,
            channels_last=channels_last,
            tumor_bias=old_metadata.tumor_bias,
            min_tumor_ml=old_metadata.min_tumor_ml,
        )
        extra_rows.append(
            (
                f"previous default model ({args.previous_model}): + uncertainty",
                lambda: run_pipeline(
                    array, matrix, old_engine, (1, 2), ("gradcam",), UncertaintySpec()
                ),
                repeats,
            )
        )
    rows = measure_rows(
        [
            (
                f"pure model compute (batch {batch}, {layout})",
                lambda: pure(batch, channels_last),
                repeats,
            ),
            (
                "pure compute, network as trained (BatchNorm not folded)",
                lambda: as_trained(batch, channels_last),
                repeats,
            ),
            ("ours: segment", lambda: run_pipeline(array, matrix, engine), repeats),
            (
                "ours: segment + explain (Grad-CAM liver, tumour)",
                lambda: run_pipeline(array, matrix, engine, (1, 2), ("gradcam",)),
                repeats,
            ),
            (
                "ours: + uncertainty (the product default)",
                lambda: run_pipeline(
                    array, matrix, engine, (1, 2), ("gradcam",), UncertaintySpec()
                ),
                repeats,
            ),
            (
                "naive: slice loop + pytorch-grad-cam",
                lambda: naive_segment_and_explain(array, matrix, plain, spec, layer),
                args.naive_repeats,
            ),
            (
                "ours through the Logic on a slicer-core scene",
                scene_run(array, matrix, args.model, args.device, batch),
                repeats,
            ),
            *extra_rows,
        ],
        depth,
    )
    pure_row, as_trained_row, segment, explain, default, naive, scene = rows[:7]

    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-600",
            "--ct",
            str(args.ct),
            "--model",
            args.model,
            "--device",
            args.device,
            "--batch",
            str(batch),
            "--slices",
            str(args.slices),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    scaling = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"  {args.slices} slices (tiled), product default, fresh process: "
        f"{scaling['seconds']:.1f} s, peak RSS {scaling['peak_rss_mb']:.0f} MB "
        f"(the CT alone {scaling['ct_mb']:.0f} MB)"
    )
    results = {
        "device": describe_device(args.device),
        "ct": args.ct.name,
        "shape": list(array.shape),
        "model": args.model,
        "batch_size": engine.batch_size,
        "pure_batch_size": batch,
        "channels_last": channels_last,
        "amp": amp,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "slices_per_second": {row["name"]: row["slices_per_second"] for row in rows},
        "naive_over_ours": naive["median_s"] / explain["median_s"],
        "ours_over_pure": segment["median_s"] / pure_row["median_s"],
        "explain_over_segment": explain["median_s"] / segment["median_s"],
        "default_over_segment": default["median_s"] / segment["median_s"],
        "scene_over_default": scene["median_s"] / default["median_s"],
        "batch_norm_folding_gain": as_trained_row["median_s"] / pure_row["median_s"],
        "torch_compile_gain": (
            pure_row["median_s"] / rows[7]["median_s"] if args.compile else None
        ),
        "previous_model": args.previous_model,
        "default_over_previous_default": (
            default["median_s"] / rows[-1]["median_s"] if args.previous_model != "none" else None
        ),
        "peak_rss_mb_600_slices": scaling["peak_rss_mb"],
        "seconds_600_slices": scaling["seconds"],
    }
    targets = [
        ("naive / ours (segment + explain)", results["naive_over_ours"], "x", ">= 10"),
        ("ours segment / pure compute", results["ours_over_pure"], "x", "<= 1.3"),
        ("segment + explain / segment", results["explain_over_segment"], "x", "<= 2"),
        ("+ uncertainty (default) / segment", results["default_over_segment"], "x", "<= 2"),
        (f"peak RSS, {args.slices} slices (MB)", results["peak_rss_mb_600_slices"], "", "< 3072"),
    ]
    if results["default_over_previous_default"] is not None:
        targets.append(
            (
                f"default / with {args.previous_model}",
                results["default_over_previous_default"],
                "x",
                "<= 1.5",
            )
        )
    print()
    for label, value, unit, target in targets:
        print(f"  {label:<40} {value:8.2f}{unit:<2} target {target}")
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
