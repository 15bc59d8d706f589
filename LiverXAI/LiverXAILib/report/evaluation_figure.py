"""The evaluation figure of one model, laid out like the source papers' figures.

One row per chosen slice; columns: CT (display window), ground truth over the CT, prediction
over the CT, Grad-CAM liver and Grad-CAM tumour as heat over the CT. Column titles on top,
the model's name and the case as title, the slice number in each row. Slices are canonical
(radiological view) and drawn with their physical aspect ratio. Drawn with Pillow, so no
plotting library is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..constants import CLASS_COLORS, LIVER, TUMOR
from ..io.atomic import atomic_path
from .overview import DISPLAY_WINDOW, TILE, _heat

COLUMN_TITLES = ("CT", "Ground truth", "Prediction", "Grad-CAM liver", "Grad-CAM tumour")
TITLE_HEIGHT = 40
HEADER_HEIGHT = 28
LABEL_ALPHA = 0.45
HEAT_ALPHA = 0.6
OUTLINE_PIXELS = 2


def figure_size(rows: int) -> tuple[int, int]:
    """Width and height in pixels of a figure with ``rows`` slices."""
    return len(COLUMN_TITLES) * TILE, TITLE_HEIGHT + HEADER_HEIGHT + rows * TILE


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def _gray(ct: np.ndarray) -> np.ndarray:
    low, high = DISPLAY_WINDOW
    gray = ((np.clip(ct.astype(np.float32), low, high) - low) / (high - low) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def _overlay_labels(base: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Liver and tumour filled half-transparent, outlined (2 pixels) in their colours."""
    image = base.astype(np.float32)
    for class_id, name in ((LIVER, "liver"), (TUMOR, "tumor")):
        mask = labels == class_id
        if not mask.any():
            continue
        colour = 255 * np.array(CLASS_COLORS[name], dtype=np.float32)
        image[mask] = (1 - LABEL_ALPHA) * image[mask] + LABEL_ALPHA * colour
        edge = mask & ~ndimage.binary_erosion(mask, iterations=OUTLINE_PIXELS)
        image[edge] = colour
    return image.astype(np.uint8)


def _overlay_heat(base: np.ndarray, heat: np.ndarray) -> np.ndarray:
    weight = HEAT_ALPHA * np.clip(heat, 0, 1)[..., None]
    return (base * (1 - weight) + _heat(heat) * weight).astype(np.uint8)


def _display_size(aspect: float) -> tuple[int, int]:
    """(width, height) of a slice with height/width ``aspect`` in a TILE x TILE cell."""
    height = TILE if aspect >= 1 else round(TILE * aspect)
    width = TILE if aspect <= 1 else round(TILE / aspect)
    return max(width, 1), max(height, 1)


def _at_size(plane: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """A 2D array resampled to the display ``size``; outlines are drawn after this, so they
    keep their width whatever the CT's size."""
    image = Image.fromarray(np.asarray(plane, dtype=np.float32))
    return np.asarray(image.resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def _paste(canvas: Image.Image, image: np.ndarray, x: int, y: int) -> None:
    """Paste a display-size ``image`` centred in the TILE x TILE cell at (x, y)."""
    tile = Image.fromarray(image)
    canvas.paste(tile, (x + (TILE - tile.width) // 2, y + (TILE - tile.height) // 2))


def render_figure_grid(evaluation, path: str | Path) -> Path:
    """Write the figure PNG of a :class:`.evaluation.ModelEvaluation` (atomically).

    Raises:
        ValueError: the evaluation holds no figure data (``figure_slices`` was 0).
    """
    figure = evaluation.figure
    if figure is None or not figure.slices:
        raise ValueError(f"{evaluation.name}: no figure slices were kept")
    rows = len(figure.slices)
    _, row_count, column_count = figure.ct.shape
    aspect = (row_count * figure.spacing[1]) / (column_count * figure.spacing[2])
    canvas = Image.new("RGB", figure_size(rows), "black")
    draw = ImageDraw.Draw(canvas)
    title = f"{evaluation.name}: case {figure.case_id}"
    draw.text((8, 8), title, fill="white", font=_font(22))
    small = _font(15)
    for column, caption in enumerate(COLUMN_TITLES):
        draw.text((column * TILE + 8, TITLE_HEIGHT + 6), caption, fill="white", font=small)
    size = _display_size(aspect)
    for row, index in enumerate(figure.slices):
        base = _gray(_at_size(figure.ct[row], size))
        tiles = [
            base,
            _overlay_labels(base, _at_size(figure.truth[row], size, nearest=True)),
            _overlay_labels(base, _at_size(figure.prediction[row], size, nearest=True)),
            _overlay_heat(base, _at_size(figure.heatmaps["liver"][row], size)),
            _overlay_heat(base, _at_size(figure.heatmaps["tumor"][row], size)),
        ]
        y = TITLE_HEIGHT + HEADER_HEIGHT + row * TILE
        for column, image in enumerate(tiles):
            _paste(canvas, image, column * TILE, y)
        draw.text((6, y + 4), f"slice {index}", fill="white", font=small)
    with atomic_path(path, suffix=".png") as temporary:
        canvas.save(temporary, format="PNG")
    return Path(path)
