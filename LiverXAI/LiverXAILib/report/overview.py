"""A montage PNG a clinician can read at a glance: CT with the prediction, and the heatmaps.

The title names the case and what was found (liver volume, tumours). Rows are axial slices in
anatomical order, **superior at the top** (the largest tumour cross-section and liver slices
spread over the organ); columns are the CT with the predicted liver and tumour outlined, then
one heat overlay per explained class with that class's predicted region outlined. Outlines
are drawn after scaling to the display size, so they are 2 pixels wide whatever the CT's
size. A footer holds the legend and the colour bar with the meaning of its scale. Slices are
shown in radiological convention (patient's right on the viewer's left) with their physical
aspect ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..constants import CLASS_COLORS, LIVER, TUMOR
from ..io.atomic import atomic_path

DISPLAY_WINDOW = (-160.0, 240.0)
TILE = 256
OUTLINE_PIXELS = 2
HEAT_ALPHA = 0.6
REGION_ON_HEAT = (0, 229, 255)  # cyan: the explained class's predicted region
TITLE_HEIGHT = 58
HEADER_HEIGHT = 26
FOOTER_HEIGHT = 120
BAR_OFFSET, BAR_HEIGHT = 34, 12  # the colour bar's rows in the footer
CLASS_DISPLAY = {"liver": "liver", "tumor": "tumour"}
DEFAULT_SCALE_NOTE = (
    "0 = no attention, 1 = the 99th percentile of the map inside the predicted region "
    "(higher values shown as 1); the same scale on every slice of this case, so a slice "
    "that holds little of the class shows a faint map"
)


def choose_slices(labels: np.ndarray, count: int = 4) -> list[int]:
    """Axial indices to show, superior first: the largest tumour section, the largest liver
    section (a map's scale follows the area it explains, so the liver map is strongest there)
    and liver slices spread across the organ (canonical axis 0 runs inferior to superior)."""
    areas_liver = (labels >= LIVER).reshape(labels.shape[0], -1).sum(axis=1)
    areas_tumor = (labels == TUMOR).reshape(labels.shape[0], -1).sum(axis=1)
    chosen: list[int] = []
    if areas_tumor.max(initial=0) > 0:
        chosen.append(int(areas_tumor.argmax()))
    if areas_liver.max(initial=0) > 0 and int(areas_liver.argmax()) not in chosen:
        chosen.append(int(areas_liver.argmax()))
    liver_slices = np.flatnonzero(areas_liver > 0)
    if liver_slices.size == 0:
        liver_slices = np.arange(labels.shape[0])
    for fraction in np.linspace(0.25, 0.75, count):
        index = int(liver_slices[int(fraction * (liver_slices.size - 1))])
        if index not in chosen and len(chosen) < count:
            chosen.append(index)
    return sorted(chosen, reverse=True)


def describe_case(name: str, labels: np.ndarray, spacing: Sequence[float]) -> str:
    """One line: the case and what was predicted (liver volume, tumour count and volume)."""
    voxel_ml = math.prod(float(s) for s in spacing) / 1000.0
    liver_ml = float(np.count_nonzero(labels >= LIVER)) * voxel_ml
    tumour = labels == TUMOR
    count = ndimage.label(tumour, structure=np.ones((3, 3, 3)))[1] if tumour.any() else 0
    found = "no tumour found"
    if count:
        plural = "s" if count > 1 else ""
        found = f"{count} tumour{plural}, {float(np.count_nonzero(tumour)) * voxel_ml:.1f} mL"
    return f"{name}: liver {liver_ml:,.0f} mL, {found}"


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _heat(values: np.ndarray) -> np.ndarray:
    """A 'hot' colour map: black → red → yellow → white, (H, W) in [0, 1] → (H, W, 3) uint8."""
    v = np.clip(values, 0, 1)[..., None]
    rgb = np.concatenate(
        [np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1
    )
    return (255 * rgb).astype(np.uint8)


def _tile_size(aspect: float) -> tuple[int, int]:
    """(width, height) of a slice with height/width ``aspect`` inside a TILE x TILE cell."""
    height = TILE if aspect >= 1 else max(1, round(TILE * aspect))
    width = TILE if aspect <= 1 else max(1, round(TILE / aspect))
    return width, height


def _resized(plane: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """A 2D array resampled to ``size`` (width, height) as float32."""
    image = Image.fromarray(np.asarray(plane, dtype=np.float32))
    return np.asarray(image.resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def _outline(image: np.ndarray, mask: np.ndarray, colour: Sequence[int]) -> None:
    """Paint the inner edge of ``mask`` (``OUTLINE_PIXELS`` wide) into ``image`` in place."""
    if mask.any():
        eroded = ndimage.binary_erosion(mask, iterations=OUTLINE_PIXELS, border_value=0)
        image[mask & ~eroded] = colour


def _class_colour(name: str) -> tuple[int, int, int]:
    return tuple(int(255 * c) for c in CLASS_COLORS[name])  # type: ignore[return-value]


def _row_tiles(
    ct: np.ndarray,
    labels: np.ndarray,
    heatmaps: Mapping[str, np.ndarray],
    index: int,
    size: tuple[int, int],
) -> list[np.ndarray]:
    """The tiles of one slice at display size: CT with outlines, then one heat per class."""
    low, high = DISPLAY_WINDOW
    gray = (np.clip(_resized(ct[index], size), low, high) - low) / (high - low) * 255
    base = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1)
    plane = labels[index]
    masks = {
        "liver": _resized(plane >= LIVER, size, nearest=True) > 0,
        "tumor": _resized(plane == TUMOR, size, nearest=True) > 0,
    }
    outlined = base.copy()
    for name, mask in masks.items():
        _outline(outlined, mask, _class_colour(name))
    tiles = [outlined]
    for name, heatmap in heatmaps.items():
        heat = np.clip(np.nan_to_num(_resized(heatmap[index], size)), 0, 1)
        weight = HEAT_ALPHA * heat[..., None]
        tile = (base * (1 - weight) + _heat(heat) * weight).astype(np.uint8)
        if name in masks:
            _outline(tile, masks[name], REGION_ON_HEAT)
        tiles.append(tile)
    return tiles


def _header(draw: ImageDraw.ImageDraw, title: str, captions: Sequence[str]) -> None:
    """The case line, the reading order, and one caption per column."""
    draw.text((10, 8), title, fill="white", font=_font(18))
    draw.text(
        (10, 34),
        "Axial slices, superior at the top; patient's right on the left",
        fill=(200, 200, 200),
        font=_font(13),
    )
    for column, caption in enumerate(captions):
        draw.text((column * TILE + 8, TITLE_HEIGHT + 5), caption, fill="white", font=_font(14))


def _footer(canvas: Image.Image, top: int, scale_note: str) -> None:
    """Legend (outline colours) and the colour bar with the meaning of its scale."""
    draw, width, small = ImageDraw.Draw(canvas), canvas.width, _font(13)
    x = 10
    for colour, text in (
        (_class_colour("liver"), "predicted liver"),
        (_class_colour("tumor"), "predicted tumour"),
        (REGION_ON_HEAT, "region the heatmap explains"),
    ):
        draw.rectangle((x, top + 12, x + 22, top + 15), fill=colour)
        draw.text((x + 28, top + 6), text, fill="white", font=small)
        x += 34 + int(draw.textlength(text, font=small)) + 18
    bar_left, bar_right, bar_top = 10, min(width - 10, 300), top + BAR_OFFSET
    ramp = np.linspace(0.0, 1.0, bar_right - bar_left)[None].repeat(BAR_HEIGHT, axis=0)
    canvas.paste(Image.fromarray(_heat(ramp)), (bar_left, bar_top))
    draw.rectangle((bar_left - 1, bar_top - 1, bar_right, bar_top + BAR_HEIGHT), outline="white")
    for value, anchor in ((0.0, "la"), (0.5, "ma"), (1.0, "ra")):
        position = bar_left + value * (bar_right - 1 - bar_left)
        draw.text((position, bar_top + 15), f"{value:g}", fill="white", font=small, anchor=anchor)
    draw.text((bar_right + 12, bar_top - 2), "heatmap: where the network", fill="white", font=small)
    draw.text(
        (bar_right + 12, bar_top + 13), "looked to decide the class", fill="white", font=small
    )
    for line, text in enumerate(_wrapped(scale_note, draw, small, width - 20)[:3]):
        draw.text((10, top + 70 + 15 * line), text, fill=(200, 200, 200), font=small)


def _wrapped(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels."""
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and draw.textlength(candidate, font=font) > width:
            lines.append(current)
            candidate = word
        current = candidate
    return [*lines, current] if current else lines


def render_overview(
    path: str | Path,
    ct: np.ndarray,
    labels: np.ndarray,
    heatmaps: Mapping[str, np.ndarray],
    spacing: tuple[float, float, float],
    title: str = "",
    method_label: str = "Grad-CAM",
    scale_note: str = DEFAULT_SCALE_NOTE,
    slice_number: Callable[[int], int] | None = None,
) -> Path:
    """Write the montage for canonical arrays (slice, row, column) with their spacing in mm.

    ``heatmaps`` maps class name → map volume in [0, 1] (any in-plane size: maps on the
    network's grid are resampled); ``title`` names the case; ``slice_number`` turns a
    canonical index into the number shown (default: the canonical index, counted from the
    inferior end).
    """
    slices = choose_slices(labels)
    tumour_areas = [np.count_nonzero(labels[i] == TUMOR) for i in range(labels.shape[0])]
    largest_tumour = int(np.argmax(tumour_areas)) if max(tumour_areas, default=0) else None
    liver_areas = [np.count_nonzero(labels[i] >= LIVER) for i in range(labels.shape[0])]
    largest_liver = int(np.argmax(liver_areas)) if max(liver_areas, default=0) else None
    size = _tile_size((labels.shape[1] * spacing[1]) / (labels.shape[2] * spacing[2]))
    columns = 1 + len(heatmaps)
    width = max(columns * TILE, 2 * TILE)
    body_top = TITLE_HEIGHT + HEADER_HEIGHT
    canvas = Image.new("RGB", (width, body_top + len(slices) * TILE + FOOTER_HEIGHT), "black")
    draw = ImageDraw.Draw(canvas)
    captions = ["CT and prediction"] + [
        f"{method_label}: {CLASS_DISPLAY.get(name, name)}" for name in heatmaps
    ]
    _header(draw, describe_case(title or "case", labels, spacing), captions)
    number = slice_number or (lambda index: index)
    for row, index in enumerate(slices):
        y = body_top + row * TILE
        for column, image in enumerate(_row_tiles(ct, labels, heatmaps, index, size)):
            x = column * TILE + (TILE - size[0]) // 2
            canvas.paste(Image.fromarray(image), (x, y + (TILE - size[1]) // 2))
        present = {"liver": (labels[index] >= LIVER).any(), "tumor": (labels[index] == TUMOR).any()}
        for column, name in enumerate(heatmaps, start=1):
            if not present.get(name, True):
                anywhere = name != "tumor" or largest_tumour is not None
                where = "on this slice" if anywhere else "in this case"
                note = f"no {CLASS_DISPLAY.get(name, name)} predicted {where}"
                draw.text((column * TILE + 8, y + TILE - 22), note, fill="white", font=_font(13))
        label = f"slice {number(index)}"
        if index == largest_tumour:
            label += " (largest tumour section)"
        elif index == largest_liver:
            label += " (largest liver section)"
        draw.text(
            (6, y + 4), label, fill="white", font=_font(13), stroke_width=2, stroke_fill="black"
        )
    _footer(canvas, body_top + len(slices) * TILE, scale_note)
    with atomic_path(path, suffix=".png") as temporary:
        canvas.save(temporary, format="PNG")
    return Path(path)
