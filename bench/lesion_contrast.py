"""How far each case's tumour stands out from its liver, in HU: what the ``lesion``
augmentation varies.

For every case of a case list (``train --data`` format): the liver's mean and spread, the
tumour's mean, and the tumour's contrast to the liver (negative: hypodense), from the manual
labels.

    .venv/bin/python bench/lesion_contrast.py docs/crossval/six-cases.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverXAI"))

from LiverXAILib.constants import LIVER, TUMOR  # noqa: E402
from LiverXAILib.training.cases import discover_cases, load_canonical_case  # noqa: E402


def case_contrast(case) -> dict[str, float | None]:
    """Slice spacing (mm), liver and tumour mean and SD, and contrast (HU) of one case."""
    canonical = load_canonical_case(case)
    liver = canonical.image[canonical.labels == LIVER].astype(float)
    tumour = canonical.image[canonical.labels == TUMOR].astype(float)
    found = bool(tumour.size)
    return {
        "slice_mm": canonical.spacing[0],
        "liver_mean": liver.mean(),
        "liver_sd": liver.std(),
        "tumour_mean": tumour.mean() if found else None,
        "tumour_sd": tumour.std() if found else None,
        "contrast": tumour.mean() - liver.mean() if found else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", help="a case list (CSV) or folder, as train --data takes")
    args = parser.parse_args()
    print("| case | slice mm | liver HU, mean ± SD | tumour HU, mean ± SD | contrast HU |")
    print("|---|---|---|---|---|")
    for case in discover_cases(args.cases):
        c = case_contrast(case)
        cells = [
            case.case_id,
            f"{c['slice_mm']:.1f}",
            f"{c['liver_mean']:.0f} ± {c['liver_sd']:.0f}",
        ]
        if c["contrast"] is None:
            cells += ["no tumour", ""]
        else:
            cells += [f"{c['tumour_mean']:.0f} ± {c['tumour_sd']:.0f}", f"{c['contrast']:+.0f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
