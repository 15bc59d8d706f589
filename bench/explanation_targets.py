"""Where the heatmaps lie and how faithful they are, on real CT with a catalog model.

For each case: the product path (``pipeline.run_pipeline``, Grad-CAM of liver and tumour) and
these measures on the map grid (the network's input size):

- ``inside``: share of the map's mass inside the predicted class (after the 3D clean-up)
  grown in-plane by 5 mm, as in the report;
- ``outside body``: share of the map's mass outside the body; the body is, per slice, the
  largest connected region of HU > -500 with its holes filled (air in the bowel and lungs
  inside the body counts as body; the couch and air around do not);
- ``pointingGame``: share of the slices holding the class whose hottest pixel lies inside;
- ``brightInside``: share of the map's voxels of at least 0.5 (what stands out) inside;
- ``p99`` / ``max``: the 99th percentile and maximum of the normalised map over the volume;
- ``max on kept slice``: whether the volume's hottest voxel lies on a slice that holds the
  class after the clean-up.

``--before`` reproduces the behaviour before issue #15: Grad-CAM at the quarter-resolution
decoder stage (``--layer decoder.1``), explaining the sum of the logits over the network's raw
per-slice argmax, scaled to the volume's maximum.
``--faithfulness`` adds deletion and insertion areas (``faithfulness.faithfulness_curves``)
for Grad-CAM, Grad-CAM++ and Integrated Gradients against a random and an edge map.

    .venv/bin/python bench/explanation_targets.py sample ircadb01_p07 [--before] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverXAI"))

from LiverXAILib.constants import CLASS_NAMES, LIVER, TUMOR  # noqa: E402
from LiverXAILib.explain.attention_measures import (  # noqa: E402
    pointing_game,
    region_for_class,
    with_margin,
)
from LiverXAILib.explain.cam import CAM_WEIGHTINGS, DEFAULT_WEIGHTING  # noqa: E402
from LiverXAILib.explain.faithfulness import faithfulness_curves  # noqa: E402
from LiverXAILib.explain.methods import normalize_volume  # noqa: E402
from LiverXAILib.io.volumes import read_volume  # noqa: E402
from LiverXAILib.models.catalog import resolve_model  # noqa: E402
from LiverXAILib.models.checkpoints import load_checkpoint  # noqa: E402
from LiverXAILib.segment.inference import SliceInferenceEngine  # noqa: E402
from LiverXAILib.segment.map_grid import labels_on_map_grid, map_spacing  # noqa: E402
from LiverXAILib.segment.orientation import canonical_orientation, canonical_spacing  # noqa: E402
from LiverXAILib.segment.pipeline import run_pipeline  # noqa: E402
from LiverXAILib.segment.postprocessing import clean_labels  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "LiverXAI" / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"


def case_path(name: str) -> Path:
    """A case folder name of the shared data, ``sample`` or a file path."""
    if name == "sample":
        return SAMPLE
    folder = SHARED / name / "ct.nii.gz"
    return folder if folder.exists() else Path(name)


def body_mask(ct_on_grid: np.ndarray) -> np.ndarray:
    """Per slice: the largest connected region of HU > -500, holes filled."""
    body = np.zeros(ct_on_grid.shape, dtype=bool)
    for index, plane in enumerate(ct_on_grid):
        components, count = ndimage.label(plane > -500)
        if count:
            largest = 1 + int(
                np.argmax(ndimage.sum_labels(plane > -500, components, range(1, count + 1)))
            )
            body[index] = ndimage.binary_fill_holes(components == largest)
    return body


def before(engine, volume, spacing):
    """Labels and Grad-CAM as before issue #15 (see the module docstring)."""
    outputs = engine.run(volume, (LIVER, TUMOR), methods=("gradcam",), slice_spacing_mm=spacing[0])
    maps = {c: normalize_volume(outputs.heatmaps["gradcam", c], "volume-max") for c in (1, 2)}
    return clean_labels(outputs.labels, spacing), maps, outputs.map_size


def measure(maps, labels, ct, spacing, map_size) -> dict:
    """The measures of the module docstring per class."""
    grid = labels_on_map_grid(labels, map_size)
    body = body_mask(labels_on_map_grid(ct, map_size))
    grid_spacing = map_spacing(spacing, labels.shape[1:], map_size)
    results = {}
    for class_id, heat in maps.items():
        region = region_for_class(grid, class_id)
        total = float(heat.sum(dtype=np.float64))
        hottest = np.unravel_index(int(heat.argmax()), heat.shape)[0]
        grown = with_margin(region, grid_spacing)
        inside = float(heat[grown].sum(dtype=np.float64))
        bright = heat >= 0.5
        results[CLASS_NAMES[class_id]] = {
            "predictedVoxels": int(region.sum()),
            "inside": inside / total if total else None,
            "pointingGame": pointing_game(heat, grown, region)[1],
            "brightInside": float((bright & grown).sum() / bright.sum()) if bright.any() else None,
            "outsideBody": float(heat[~body].sum(dtype=np.float64)) / total if total else None,
            "p99": float(np.percentile(heat, 99)),
            "max": float(heat.max()),
            "maxOnKeptSlice": bool(region[hottest].any()) if total else None,
        }
    return results


def run_case(name: str, args) -> dict:
    model, metadata = load_checkpoint(resolve_model(args.model))
    array, ijk_to_ras = read_volume(case_path(name))
    orientation = canonical_orientation(ijk_to_ras)
    volume, spacing = orientation.apply(array), canonical_spacing(ijk_to_ras, orientation)
    weighting = "channel-mean" if args.before else args.weighting
    engine = SliceInferenceEngine(
        model,
        metadata.input_spec(),
        torch.device("cpu"),
        16,
        cam_layer=args.layer,
        cam_weighting=weighting,
    )
    if args.before:
        labels, maps, map_size = before(engine, volume, spacing)
    else:
        result = run_pipeline(array, ijk_to_ras, engine, (LIVER, TUMOR), ("gradcam",))
        labels, maps, map_size = result.labels, result.heatmaps["gradcam"], result.map_size
    out = {"case": name, "layer": engine.cam_layer_name, "weighting": weighting}
    out["before"] = args.before
    out["maps"] = measure(maps, labels, volume, spacing, map_size)
    if args.faithfulness:
        curves = faithfulness_curves(
            model,
            metadata.input_spec(),
            volume,
            labels,
            methods=args.methods.split(","),
            max_slices=args.max_slices,
            layer=args.layer,
            weighting=weighting,
            slice_spacing_mm=spacing[0],
        )
        out["faithfulness"] = curves.to_dict()
    return out


def print_case(out: dict) -> None:
    when = ", before #15" if out["before"] else ""
    print(f"\n{out['case']} (layer {out['layer']}, {out['weighting']} weights{when})")
    for name, values in out["maps"].items():
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in values.items()}
        print(f"  {name:6s} {shown}")
    for name, maps in out.get("faithfulness", {}).get("perClass", {}).items():
        for key, summary in maps.items():
            print(
                f"  {name:6s} {key:22s} deletion AUC {summary['deletion_auc']:.3f}  "
                f"insertion AUC {summary['insertion_auc']:.3f}  ({summary['slices']} slices)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="sample, a folder of ../shared/data, or a file")
    parser.add_argument("--model", default="unet-demo")
    parser.add_argument("--layer", default=None, help="CAM layer (default: the model's)")
    parser.add_argument("--weighting", default=DEFAULT_WEIGHTING, choices=CAM_WEIGHTINGS)
    parser.add_argument("--before", action="store_true", help="the behaviour before #15")
    parser.add_argument("--methods", default="gradcam,gradcam++,integrated-gradients")
    parser.add_argument("--faithfulness", action="store_true")
    parser.add_argument("--max-slices", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = []
    for name in args.cases:
        results.append(run_case(name, args))
        print_case(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
