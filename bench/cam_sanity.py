"""Model-randomisation sanity check (Adebayo et al. 2018) of CAM layers and weightings.

For each ``METHOD:LAYER:WEIGHTING`` the demo U-Net's liver maps on the bundled sample's
slices (those of ``Testing/test_sanity_checks.py``) are compared with those of copies whose
layers are re-initialised from the head down, for three random draws, and judged as the
test suite judges the product's methods (``sanity_checks.judge``, without the label
permutation). Prints the verdict, the mean |rho| after each cascade step and each draw's
final rho.

    .venv/bin/python bench/cam_sanity.py gradcam:decoder.1:channel-mean \\
        gradcam:decoder.2:channel-mean gradcam:decoder.2:element-wise
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverXAI"))

from LiverXAILib.explain.sanity_checks import (  # noqa: E402
    average_cascades,
    cascading_randomization,
    judge,
)
from LiverXAILib.io.volumes import read_volume  # noqa: E402
from LiverXAILib.models.catalog import resolve_model  # noqa: E402
from LiverXAILib.models.checkpoints import load_checkpoint  # noqa: E402
from LiverXAILib.segment.orientation import canonical_orientation, canonical_spacing  # noqa: E402

SAMPLE = ROOT / "LiverXAI" / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
SLICES = [100, 106]  # as Testing/test_sanity_checks.py
SEEDS = (0, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="METHOD:LAYER:WEIGHTING")
    parser.add_argument("--model", default="unet-demo")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, metadata = load_checkpoint(resolve_model(args.model))
    array, ijk_to_ras = read_volume(SAMPLE)
    orientation = canonical_orientation(ijk_to_ras)
    slice_mm = canonical_spacing(ijk_to_ras, orientation)[0]
    inputs = metadata.input_spec().batch(orientation.apply(array), SLICES, slice_mm)
    for setting in args.settings:
        method, layer, weighting = setting.split(":")
        cascades = [
            cascading_randomization(
                model, inputs, 1, method, seed=seed, layer=layer, weighting=weighting
            )
            for seed in SEEDS
        ]
        averaged = average_cascades(cascades)
        result = judge(method, averaged, None, seed_finals=[c[-1].spearman for c in cascades])
        print(
            f"{setting}: {'passed' if result.passed else 'FAILS'}; mean |rho| per step "
            f"{[round(step.spearman, 2) for step in averaged]}; final rho per draw "
            f"{[round(c[-1].spearman, 2) for c in cascades]}"
        )


if __name__ == "__main__":
    main()
