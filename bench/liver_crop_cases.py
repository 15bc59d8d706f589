"""Liver-crop copies of a case list: what the second stage of a liver-then-tumour cascade
sees, with the liver's box taken from the label (a first stage that makes no mistakes).

For every case: a square in-plane box (in mm) around the label's liver, its longer side plus
``--margin-mm`` on each side, kept inside the slice; the slices from ``--margin-mm`` above
the liver to ``--margin-mm`` below it. CT and label are cut to that box and written as
NIfTI in their true place, with a CSV (same case and patient columns) that ``crossval
--data`` takes. A cross-validation on it screens the cascade: the network sees each lesion
1.4–2.3 times wider in pixels and only the liver's surroundings. If that does not find the
held-out patients' tumours, a cascade whose first stage makes mistakes will not either.

    .venv/bin/python bench/liver_crop_cases.py docs/crossval/six-cases.csv --out CROPS
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "LiverXAI"))

from LiverXAILib.constants import LIVER  # noqa: E402
from LiverXAILib.segment.masks import bounding_box  # noqa: E402
from LiverXAILib.training.cases import Case, discover_cases  # noqa: E402


def slice_axis(image: sitk.Image) -> int:
    """The image index axis (x 0, y 1, z 2) that runs closest to head-feet."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return int(np.argmax(np.abs(direction[2])))


def crop_box(labels: sitk.Image, margin_mm: float) -> tuple[list[int], list[int]]:
    """(index, size) of the crop around the liver, per image index axis (x, y, z)."""
    box = bounding_box(sitk.GetArrayViewFromImage(labels) >= LIVER)  # numpy axes (z, y, x)
    if box is None:
        raise ValueError("the label has no liver to crop around")
    extents = box[::-1]  # per image index axis (x, y, z)
    spacing, extent = labels.GetSpacing(), labels.GetSize()
    across = slice_axis(labels)
    plane = [i for i in range(3) if i != across]
    side_mm = max((extents[i].stop - extents[i].start) * spacing[i] for i in plane)
    index, size = [0, 0, 0], [0, 0, 0]
    for i in range(3):
        first, last = extents[i].start, extents[i].stop
        if i == across:
            pad = int(np.ceil(margin_mm / spacing[i]))
            index[i], stop = max(first - pad, 0), min(last + pad, extent[i])
            size[i] = stop - index[i]
            continue
        width = min(int(np.ceil((side_mm + 2 * margin_mm) / spacing[i])), extent[i])
        start = (first + last) // 2 - width // 2
        index[i] = min(max(start, 0), extent[i] - width)  # shifted to stay inside the slice
        size[i] = width
    return index, size


def crop_case(case: Case, out: Path, margin_mm: float) -> tuple[Path, Path]:
    """Write ``case``'s CT and label cut to its liver box into ``out``; their paths."""
    image, labels = sitk.ReadImage(str(case.image)), sitk.ReadImage(str(case.label))
    index, size = crop_box(labels, margin_mm)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "ct.nii.gz", out / "label.nii.gz"
    for volume, path in zip((image, labels), paths, strict=True):
        sitk.WriteImage(sitk.RegionOfInterest(volume, size, index), str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", help="a case list (CSV) or folder, as train --data takes")
    parser.add_argument("--out", type=Path, required=True, help="folder for the crops and CSV")
    parser.add_argument("--margin-mm", type=float, default=10.0, help="around the liver")
    args = parser.parse_args()
    rows = []
    for case in discover_cases(args.cases):
        image, label = crop_case(case, args.out / case.case_id, args.margin_mm)
        rows.append({"image": image, "label": label, "case": case.case_id, "patient": case.patient})
        print(f"{case.case_id}: {sitk.ReadImage(str(image)).GetSize()} voxels", flush=True)
    with open(args.out / "cases.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=["image", "label", "case", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'cases.csv'}")


if __name__ == "__main__":
    main()
