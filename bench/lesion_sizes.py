"""How large each true lesion looks to the network: pixels across at the model's input size,
over the whole slice (what the shipped models see) and over a crop to the liver's box (what
the second stage of a liver-then-tumour cascade would see).

For every case of a case list (``train --data`` format), every tumour lesion of the label
(3D 26-connected, as the cross-validation counts them) with its volume, its longest axial
diameter (``lesions.measure_lesions``) and that diameter in input pixels.

    .venv/bin/python bench/lesion_sizes.py docs/crossval/six-cases.csv [--size 128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverXAI"))

from LiverXAILib.constants import LIVER  # noqa: E402
from LiverXAILib.segment.lesions import measure_lesions  # noqa: E402
from LiverXAILib.segment.masks import bounding_box  # noqa: E402
from LiverXAILib.training.cases import discover_cases, load_canonical_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", help="a case list (CSV) or folder, as train --data takes")
    parser.add_argument("--size", type=int, default=128, help="the model's input size")
    args = parser.parse_args()
    print(
        "| case | in-plane mm/px: whole slice / liver crop | lesion mL | diameter mm | "
        "px across: whole slice / liver crop |"
    )
    print("|---|---|---|---|---|")
    for case in discover_cases(args.cases):
        canonical = load_canonical_case(case)
        _, rows_mm, columns_mm = canonical.spacing
        plane = canonical.labels.shape[1:]
        whole = max(plane[0] * rows_mm, plane[1] * columns_mm) / args.size
        box = bounding_box(canonical.labels >= LIVER)
        liver_mm = max(
            (box[1].stop - box[1].start) * rows_mm, (box[2].stop - box[2].start) * columns_mm
        )
        crop = liver_mm / args.size
        lesions = measure_lesions(canonical.labels, canonical.spacing)
        name, scale = case.case_id, f"{whole:.2f} / {crop:.2f}"
        if not lesions:
            print(f"| {name} | {scale} | no tumour | | |")
        for lesion in lesions:  # the case's name and scale on its first row only
            d = lesion.longest_axial_diameter_mm
            print(
                f"| {name} | {scale} | {lesion.volume_ml:.1f} | {d:.0f} | "
                f"{d / whole:.0f} / {d / crop:.0f} |"
            )
            name, scale = "", ""


if __name__ == "__main__":
    main()
