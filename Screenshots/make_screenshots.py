"""Make the extension's screenshots from the bundled sample CT, headless (slicer-core wheel).

    .venv/bin/python Screenshots/make_screenshots.py [--out Screenshots]

Runs Segment & Explain through ``LiverXAILogic`` on a headless MRML scene with the module's
defaults (the default model, Grad-CAM for liver and tumour, TTA uncertainty), then writes

- ``SegmentAndExplain_overview.png``: the overview montage the ``segment`` command writes
  (``*_overview.png``: CT with the predicted outlines, Grad-CAM liver, Grad-CAM tumour);
- ``SegmentAndExplain_3d.png``: the 3D view rendered offscreen through Slicer's displayable
  managers (``render3d.py``; VTK's EGL window, Mesa on a CPU): the liver surface inside the
  volume-rendered CT, seen from the front, framed on the whole CT so bones give the context;
- ``SegmentAndExplain.png``: both side by side with a title, a legend and the measured volume,
  the image ``EXTENSION_SCREENSHOTURLS`` points to.

Each file is kept under 1 MB (reduced to a 256-colour palette if needed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "LiverXAI" / "Resources" / "Data" / "TotalSegmentatorExampleCT.nii.gz"
NAMES = {
    "overview": "SegmentAndExplain_overview.png",
    "3d": "SegmentAndExplain_3d.png",
    "composite": "SegmentAndExplain.png",
}
MAX_BYTES = 1_000_000
BACKGROUND = (18, 18, 22)
TEXT = (235, 235, 235)
MUTED = (170, 170, 178)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def compose(overview: Image.Image, view3d: Image.Image, facts: list[str]) -> Image.Image:
    """The overview (left) and the 3D view (right) under a title, with a legend and ``facts``
    (one line each) below the 3D view."""
    margin, header = 16, 78
    side = min(view3d.width, overview.height - 330, 720)
    view = view3d.convert("RGB").resize((side, side), Image.LANCZOS)
    width = margin + overview.width + margin + side + margin
    height = header + max(overview.height, side + 330) + 40
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((margin, 12), "LiverXAI: Segment & Explain", font=_font(30), fill=TEXT)
    draw.text(
        (margin, 50),
        "Liver and liver-tumour segmentation of abdominal CT, explained with Grad-CAM "
        "heatmaps. Bundled sample CT, default model.",
        font=_font(17),
        fill=MUTED,
    )
    canvas.paste(overview.convert("RGB"), (margin, header))
    right = margin + overview.width + margin
    canvas.paste(view, (right, header))
    legend = [
        "Left: four axial slices (radiological view).",
        "  First column: the CT, predicted liver outlined in",
        "  peach, tumour in yellow.",
        "  Grad-CAM liver / tumour: where the network looked",
        "  for each class (plain CT = not, red to yellow = most).",
        "Right: 3D view, from the front: the liver surface",
        "  inside the volume-rendered CT.",
        "",
        *facts,
    ]
    y = header + side + 14
    for line in legend:
        draw.text((right, y), line, font=_font(17), fill=TEXT if line[:2] != "  " else MUTED)
        y += 23
    draw.text(
        (margin, height - 30),
        "Research software, not for clinical use.",
        font=_font(17),
        fill=(255, 196, 120),
    )
    return canvas


def save_small(image: Image.Image, path: Path, max_bytes: int = MAX_BYTES) -> Path:
    """Save as optimised PNG; if that exceeds ``max_bytes``, as a 256-colour palette PNG."""
    image.save(path, format="PNG", optimize=True)
    if path.stat().st_size > max_bytes:
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(
            path, format="PNG", optimize=True
        )
    return path


def make_screenshots(out: Path) -> dict[str, Path]:
    """Run the sample through the product's path and write the three PNGs into ``out``."""
    sys.path.insert(0, str(ROOT / "LiverXAI"))
    from LiverXAILib.io.result_files import write_outputs
    from LiverXAILib.io.volumes import read_volume, volume_stem
    from LiverXAILib.slicer.headless import create_headless_application
    from LiverXAILib.slicer.logic import LiverXAILogic
    from LiverXAILib.slicer.render3d import render_3d_view
    from LiverXAILib.slicer.scene import add_volume_from_array

    app = create_headless_application()
    array, ijk_to_ras = read_volume(SAMPLE)
    ct = add_volume_from_array(app.scene, array, ijk_to_ras, volume_stem(SAMPLE))
    logic = LiverXAILogic(app.scene, app.appLogic)
    result = logic.segmentAndExplain(ct, volumeRendering=False, ctVolumeRendering=True)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="liverxai-screenshots-") as folder:
        work = Path(folder)
        stem = volume_stem(SAMPLE)  # as the segment command names its files
        segmentation = app.scene.GetNodeByID(result.segmentationNodeID)
        write_outputs(result, array, segmentation, work, stem, SAMPLE)
        overview = Image.open(work / f"{stem}_overview.png").convert("RGB")
        bounds = [0.0] * 6
        ct.GetRASBounds(bounds)  # the whole CT: the bones frame the liver
        render_3d_view(app.scene, app.appLogic, work / "sample_3d.png", bounds)
        view3d = Image.open(work / "sample_3d.png").convert("RGB")
    facts = [
        f"Liver: {result.liverVolumeMl:.0f} mL (a lower bound: the scan",
        "  cuts the top of the liver).",
        f"Tumour: {result.tumorCount} lesions found (the tumour",
        "  heatmap column shows the plain CT).",
        f"Model {result.modelName}, {result.device.split(':')[0]}.",
    ]
    paths = {key: out / name for key, name in NAMES.items()}
    save_small(overview, paths["overview"])
    save_small(view3d, paths["3d"])
    save_small(compose(overview, view3d, facts), paths["composite"])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Screenshots")
    args = parser.parse_args(argv)
    for path in make_screenshots(args.out).values():
        print(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
