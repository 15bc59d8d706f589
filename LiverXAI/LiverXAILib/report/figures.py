"""Per-slice figures for the HTML report, laid out like the source papers' figures.

One PNG per axial slice, panels left to right: the CT, the CT with the predicted liver and
tumour outlined, one heat overlay per (method, class) on a shared 0..1 scale with its colour
bar, and the per-voxel uncertainty (normalised predictive entropy) with its own colour bar.
Arrays are canonical (slice, row, column), which is already the radiological view (patient
right on the viewer's left), and every panel keeps the physical aspect ratio of the slice.
Drawn with matplotlib's Agg canvas on a private ``Figure`` (no pyplot global state); each
panel is resampled once to its display size and placed pixel for pixel, which keeps a figure
well under a second even for 512 x 512 slices.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image
from scipy import ndimage

from ..constants import CLASS_COLORS, LIVER, TUMOR
from ..segment.map_grid import labels_on_map_grid

HEAT_CMAP = "hot"
UNCERTAINTY_CMAP = "viridis"
HEAT_ALPHA = 0.65
OUTLINE_ON_HEAT = "#00e5ff"
CLASS_DISPLAY = {"liver": "liver", "tumor": "tumour"}
DEFAULT_METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "gradcam++": "Grad-CAM++",
    "ig": "Integrated Gradients",
    "integrated_gradients": "Integrated Gradients",
}

# Layout in inches.
PANEL_WIDTH = 1.35
GAP = 0.07
MARGIN = 0.12
COLORBAR_WIDTH = 0.1
BAR_SLOT_WIDTH = 0.62  # the bar and its tick labels and title
SUPTITLE_HEIGHT = 0.3
HEADER_HEIGHT = 0.24  # one for the method names, one for the panel titles
LEGEND_HEIGHT = 0.3
DPI = 150


def choose_report_slices(
    labels: np.ndarray,
    review_slices: Sequence[int],
    uncertainty: np.ndarray | None = None,
    count: int = 4,
) -> list[int]:
    """Canonical slice indices to illustrate, without duplicates.

    The worst review slices come first (``review_slices`` is worst first; at most half of
    ``count``, at least one), then the largest tumour cross-section, then — only when there is
    no review slice and ``uncertainty`` is given — the liver slice with the highest mean
    uncertainty, then liver slices spread across the organ.
    """
    if count <= 0:
        return []
    depth = labels.shape[0]
    chosen: list[int] = []

    def add(index: int) -> None:
        if 0 <= index < depth and index not in chosen and len(chosen) < count:
            chosen.append(index)

    for index in review_slices:
        if len(chosen) >= max(1, count // 2):
            break
        add(int(index))
    # One slice at a time: no volume-sized temporaries.
    tumour_areas = np.array([np.count_nonzero(labels[i] == TUMOR) for i in range(depth)])
    if tumour_areas.max(initial=0) > 0:
        add(int(tumour_areas.argmax()))
    if not len(review_slices) and uncertainty is not None:
        most_uncertain = _most_uncertain_liver_slice(labels, uncertainty)
        if most_uncertain is not None:
            add(most_uncertain)
    liver_slices = np.flatnonzero([(labels[i] >= LIVER).any() for i in range(depth)])
    if liver_slices.size == 0:
        liver_slices = np.arange(depth)
    remaining = count - len(chosen)
    for fraction in 0.2 + 0.6 * (np.arange(remaining) + 0.5) / max(remaining, 1):
        add(int(liver_slices[int(fraction * (liver_slices.size - 1))]))
    middle = liver_slices[liver_slices.size // 2]
    for index in sorted(liver_slices.tolist(), key=lambda i: abs(i - middle)):
        add(int(index))
    return chosen


def _most_uncertain_liver_slice(labels: np.ndarray, uncertainty: np.ndarray) -> int | None:
    """The liver slice with the highest mean uncertainty. The uncertainty may lie on the
    coarser map grid (map_grid.py): the liver is then sampled at the map pixels' centres."""
    if uncertainty.shape[1:] != labels.shape[1:]:
        labels = labels_on_map_grid(labels, uncertainty.shape[1:])
    best, best_mean = None, -1.0
    for index in range(min(labels.shape[0], uncertainty.shape[0])):
        mask = labels[index] >= LIVER
        if mask.any():
            mean = float(np.mean(uncertainty[index][mask]))
            if mean > best_mean:
                best, best_mean = index, mean
    return best


def render_slice_figure(
    ct: np.ndarray,
    labels: np.ndarray,
    heatmaps: Mapping[str, Mapping[str, np.ndarray]],
    uncertainty: np.ndarray | None,
    spacing: Sequence[float],
    slice_index: int,
    method_labels: Mapping[str, str] | None = None,
    hu_window: tuple[float, float] = (-160.0, 240.0),
    title: str | None = None,
) -> bytes:
    """One PNG (bytes) of canonical slice ``slice_index``; spacing is (slice, row, column) mm.

    ``heatmaps`` is method → class name → canonical volume in [0, 1]; each method's panels sit
    under one header with its label from ``method_labels`` (default: known names, else the key).
    """
    names = {**DEFAULT_METHOD_LABELS, **(method_labels or {})}
    rows, columns = ct.shape[1:3]
    ratio = float(np.clip(rows * float(spacing[1]) / (columns * float(spacing[2])), 0.4, 2.5))
    size = (round(PANEL_WIDTH * DPI), round(PANEL_WIDTH * ratio * DPI))  # pixels (w, h)
    gray = _gray(_resized(ct[slice_index], size), hu_window)
    label_slice = labels[slice_index]
    masks = {
        "liver": _resized(label_slice >= LIVER, size) >= 0.5,
        "tumor": _resized(label_slice == TUMOR, size) >= 0.5,
    }
    drawing = _SliceFigure(_slots(heatmaps, uncertainty), size, gray, masks)
    drawing.title(title if title is not None else f"Axial slice {slice_index}")
    drawing.draw_slots(slice_index, uncertainty)
    drawing.method_headers(names)
    return drawing.png()


def _slots(
    heatmaps: Mapping[str, Mapping[str, np.ndarray]], uncertainty: np.ndarray | None
) -> list[tuple[str, object]]:
    """The figure's slots left to right: (kind, payload) for the CT, the prediction, each
    heat panel, the heat colour bar, the uncertainty and its colour bar."""
    slots: list[tuple[str, object]] = [("ct", None), ("prediction", None)]
    for method, per_class in heatmaps.items():
        slots += [("heat", (method, name, volume)) for name, volume in per_class.items()]
    if len(slots) > 2:
        slots.append(("bar", (HEAT_CMAP, "attribution (0–1)")))
    if uncertainty is not None:
        slots += [("uncertainty", None), ("bar", (UNCERTAINTY_CMAP, "normalised entropy"))]
    return slots


class _SliceFigure:
    """One slice figure being drawn: its layout (inches, and fractions of the figure), the
    slice's CT in grey and the predicted outlines, both at the panels' pixel ``size``."""

    def __init__(
        self,
        slots: list[tuple[str, object]],
        size: tuple[int, int],
        gray: np.ndarray,
        masks: dict[str, np.ndarray],
    ) -> None:
        self.slots, self.size, self.gray, self.masks = slots, size, gray, masks
        self.widths = [BAR_SLOT_WIDTH if kind == "bar" else PANEL_WIDTH for kind, _ in slots]
        panel_height = size[1] / DPI
        self.total_width = 2 * MARGIN + sum(self.widths) + GAP * (len(slots) - 1)
        self.total_height = SUPTITLE_HEIGHT + 2 * HEADER_HEIGHT + panel_height + LEGEND_HEIGHT
        self.figure = Figure(
            figsize=(self.total_width, self.total_height), dpi=DPI, facecolor="white"
        )
        FigureCanvasAgg(self.figure)
        self.bottom = LEGEND_HEIGHT / self.total_height
        self.height = panel_height / self.total_height
        self.title_y = (LEGEND_HEIGHT + panel_height + 0.05) / self.total_height
        self.group_y = (LEGEND_HEIGHT + panel_height + 1.3 * HEADER_HEIGHT) / self.total_height
        self.groups: dict[str, list[float]] = {}  # method → left and right edges of its panels

    def title(self, text: str) -> None:
        """The figure's title, top left."""
        self.figure.text(
            MARGIN / self.total_width,
            1 - 0.05 / self.total_height,
            text,
            ha="left",
            va="top",
            fontsize=12,
            fontweight="bold",
        )

    def draw_slots(self, slice_index: int, uncertainty: np.ndarray | None) -> None:
        """Draw every slot, left to right."""
        x = MARGIN
        for (kind, payload), width in zip(self.slots, self.widths, strict=True):
            if kind == "ct":
                self.panel(x, self.gray, "CT")
                _orientation_marks(self.figure, x, self.total_width, self.bottom + self.height / 2)
            elif kind == "prediction":
                self.prediction(x)
            elif kind == "heat":
                method, name, volume = payload
                self.heat(x, name, volume[slice_index])
                self.groups.setdefault(method, []).extend([x, x + width])
            elif kind == "uncertainty":
                self.uncertainty(x, uncertainty[slice_index])
            else:
                self.colorbar(x, *payload)
            x += width + GAP

    def panel(self, x: float, image: np.ndarray, panel_title: str) -> None:
        """Place an RGB image in [0, 1] at ``x`` inches, with its title above it."""
        pixels = (255 * np.clip(image, 0, 1)).astype(np.uint8)
        self.figure.figimage(
            pixels, xo=round(x * DPI), yo=round(LEGEND_HEIGHT * DPI), origin="upper"
        )
        centre = (x + PANEL_WIDTH / 2) / self.total_width
        self.figure.text(centre, self.title_y, panel_title, ha="center", va="bottom", fontsize=10)

    def prediction(self, x: float) -> None:
        """The CT with the predicted liver and tumour outlined, and their legend below."""
        image = self.gray.copy()
        for name, mask in self.masks.items():
            _draw_outline(image, mask, CLASS_COLORS[name], thickness=2)
        self.panel(x, image, "Prediction")
        _legend(self.figure, (x + PANEL_WIDTH / 2) / self.total_width, self.bottom)

    def heat(self, x: float, name: str, heat_slice: np.ndarray) -> None:
        """One class's heat over the CT, outlined by the class's prediction."""
        heat = np.clip(np.nan_to_num(_resized(heat_slice, self.size)), 0, 1)
        image = _heat_overlay(self.gray, heat)
        if name in self.masks:
            _draw_outline(image, self.masks[name], OUTLINE_ON_HEAT, thickness=2)
        self.panel(x, image, CLASS_DISPLAY.get(name, str(name)))

    def uncertainty(self, x: float, uncertainty_slice: np.ndarray) -> None:
        """The uncertainty in its colour map, the liver outlined in white."""
        values = np.clip(np.nan_to_num(_resized(uncertainty_slice, self.size)), 0, 1)
        image = matplotlib.colormaps[UNCERTAINTY_CMAP](values)[..., :3]
        _draw_outline(image, self.masks["liver"], (1.0, 1.0, 1.0), thickness=1)
        self.panel(x, image, "Uncertainty")

    def colorbar(self, x: float, cmap: str, label: str) -> None:
        """A 0..1 colour bar of ``cmap`` at ``x`` inches."""
        box = (x / self.total_width, self.bottom, COLORBAR_WIDTH / self.total_width, self.height)
        mappable = ScalarMappable(Normalize(0, 1), matplotlib.colormaps[cmap])
        colorbar = self.figure.colorbar(mappable, cax=self.figure.add_axes(box))
        colorbar.set_ticks([0, 0.5, 1])
        colorbar.ax.tick_params(labelsize=8)
        colorbar.set_label(label, fontsize=9)

    def method_headers(self, names: Mapping[str, str]) -> None:
        """Each method's name over its panels, underlined across them."""
        for method, edges in self.groups.items():
            left, right = min(edges) / self.total_width, max(edges) / self.total_width
            self.figure.text(
                (left + right) / 2,
                self.group_y,
                names.get(method, str(method)),
                ha="center",
                va="bottom",
                fontsize=11,
                fontweight="bold",
            )
            self.figure.add_artist(
                Line2D(
                    [left, right],
                    [self.group_y - 0.01] * 2,
                    color="#888888",
                    linewidth=0.8,
                    transform=self.figure.transFigure,
                )
            )

    def png(self) -> bytes:
        """The figure as PNG bytes."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
        return buffer.getvalue()


def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One slice resampled (antialiased bilinear) to ``size`` = (width, height) pixels."""
    array = np.asarray(image, dtype=np.float32)
    return np.asarray(Image.fromarray(array).resize(size, Image.BILINEAR))


def _gray(ct_slice: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """(H, W) HU → (H, W, 3) float RGB in [0, 1] through the display window."""
    low, high = float(window[0]), float(window[1])
    gray = (np.clip(ct_slice, low, high) - low) / max(high - low, 1e-6)
    return np.repeat(gray[..., None], 3, axis=-1)


def _heat_overlay(gray: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Heat over the CT, more opaque where the heat is higher (as in the overview montage)."""
    colours = matplotlib.colormaps[HEAT_CMAP](heat)[..., :3]
    weight = HEAT_ALPHA * np.sqrt(heat)[..., None]
    return gray * (1 - weight) + colours * weight


def _draw_outline(
    image: np.ndarray, mask: np.ndarray, colour: Sequence[float] | str, thickness: int
) -> None:
    """Paint the inner edge of ``mask`` (``thickness`` pixels) into ``image`` in place."""
    if mask.any() and not mask.all():
        edge = mask & ~ndimage.binary_erosion(mask, iterations=thickness)
        image[edge] = to_rgb(colour)


def _orientation_marks(figure: Figure, x: float, total_width: float, y: float) -> None:
    """Radiological convention: the patient's right is on the viewer's left."""
    style = {"color": "white", "fontsize": 9, "fontweight": "bold", "va": "center"}
    figure.text((x + 0.04) / total_width, y, "R", ha="left", **style)
    figure.text((x + PANEL_WIDTH - 0.04) / total_width, y, "L", ha="right", **style)


def _legend(figure: Figure, centre: float, top: float) -> None:
    handles = [
        Line2D([], [], color=CLASS_COLORS[name], linewidth=2, label=CLASS_DISPLAY[name])
        for name in ("liver", "tumor")
    ]
    figure.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(centre, top),
        ncol=2,
        fontsize=9,
        frameon=False,
        handlelength=1.2,
        columnspacing=0.8,
    )
