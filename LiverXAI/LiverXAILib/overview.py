"""A montage PNG of a few informative slices: CT with the predicted contours, and Grad-CAM.

Rows are axial slices (the largest tumour cross-section first, then liver slices spread over
the organ); columns are the CT with liver/tumour outlines and one heat overlay per explained
class. Slices are shown in radiological convention with their physical aspect ratio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from .atomic import atomic_path
from .constants import CLASS_COLORS, CLASS_NAMES, LIVER, TUMOR
from .map_grid import upsample_slice

DISPLAY_WINDOW = (-160.0, 240.0)
TILE = 256


def choose_slices(labels: np.ndarray, count: int = 4) -> list[int]:
    """Axial indices to show: the largest tumour slice, then liver slices across the organ."""
    areas_liver = (labels >= LIVER).reshape(labels.shape[0], -1).sum(axis=1)
    areas_tumor = (labels == TUMOR).reshape(labels.shape[0], -1).sum(axis=1)
    chosen: list[int] = []
    if areas_tumor.max() > 0:
        chosen.append(int(areas_tumor.argmax()))
    liver_slices = np.flatnonzero(areas_liver > 0)
    if liver_slices.size == 0:
        liver_slices = np.arange(labels.shape[0])
    for fraction in np.linspace(0.25, 0.75, count):
        index = int(liver_slices[int(fraction * (liver_slices.size - 1))])
        if index not in chosen and len(chosen) < count:
            chosen.append(index)
    return chosen


def _heat(values: np.ndarray) -> np.ndarray:
    """A 'hot' colour map: black → red → yellow → white, (H, W) in [0, 1] → (H, W, 3) uint8."""
    v = np.clip(values, 0, 1)[..., None]
    rgb = np.concatenate(
        [np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1
    )
    return (255 * rgb).astype(np.uint8)


def _tile(image: np.ndarray, aspect: float) -> Image.Image:
    height = TILE if aspect >= 1 else int(round(TILE * aspect))
    width = TILE if aspect <= 1 else int(round(TILE / aspect))
    return Image.fromarray(image).resize((width, height), Image.BILINEAR)


def render_overview(
    path: str | Path,
    ct: np.ndarray,
    labels: np.ndarray,
    heatmaps: dict[str, np.ndarray],
    spacing: tuple[float, float, float],
    title: str = "",
) -> Path:
    """Write the montage for canonical arrays (slice, row, column) with their spacing in mm."""
    slices = choose_slices(labels)
    aspect = (labels.shape[1] * spacing[1]) / (labels.shape[2] * spacing[2])
    columns = 1 + len(heatmaps)
    header = 24
    canvas = Image.new("RGB", (columns * TILE, header + len(slices) * TILE), "black")
    draw = ImageDraw.Draw(canvas)
    captions = ["CT + prediction"] + [f"Grad-CAM {name}" for name in heatmaps]
    for column, caption in enumerate(captions):
        draw.text(
            (column * TILE + 6, 6), caption if column or not title else f"{title}", fill="white"
        )
    low, high = DISPLAY_WINDOW
    for row, index in enumerate(slices):
        gray = ((np.clip(ct[index], low, high) - low) / (high - low) * 255).astype(np.uint8)
        base = np.repeat(gray[..., None], 3, axis=-1)
        outlined = base.copy()
        for class_id in (LIVER, TUMOR):
            mask = labels[index] >= class_id if class_id == LIVER else labels[index] == TUMOR
            edge = mask & ~ndimage.binary_erosion(mask, iterations=1)
            outlined[edge] = (255 * np.array(CLASS_COLORS[CLASS_NAMES[class_id]])).astype(np.uint8)
        tiles = [outlined]
        for heatmap in heatmaps.values():
            values = upsample_slice(heatmap[index], labels.shape[1:])  # maps: network size
            heat = values[..., None]
            tiles.append((base * (1 - 0.6 * heat) + _heat(values) * 0.6 * heat).astype(np.uint8))
        for column, image in enumerate(tiles):
            canvas.paste(_tile(image, aspect), (column * TILE, header + row * TILE))
        draw.text((4, header + row * TILE + 4), f"slice {index}", fill="white")
    with atomic_path(path, suffix=".png") as temporary:
        canvas.save(temporary, format="PNG")
    return Path(path)
