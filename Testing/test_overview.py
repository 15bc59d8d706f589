"""The overview PNG: anatomical order, a title that says what the case is, visible outlines at
any CT size, and a footer with legend and colour bar."""

from __future__ import annotations

import numpy as np
import pytest
from LiverXAILib.report import overview
from LiverXAILib.report.overview import choose_slices, describe_case, render_overview
from PIL import Image


def synthetic_case(size: int) -> dict:
    """A canonical case: an ellipsoid liver with one tumour, CT in HU, maps on a 32 x 32 grid."""
    depth = 20
    z, y, x = np.mgrid[:depth, :size, :size].astype(np.float32)
    scale = size / 64
    liver = ((z - 10) / 8) ** 2 + ((y - 30 * scale) / (16 * scale)) ** 2 + (
        (x - 24 * scale) / (14 * scale)
    ) ** 2 < 1
    tumour = ((z - 12) / 3) ** 2 + ((y - 30 * scale) / (4 * scale)) ** 2 + (
        (x - 22 * scale) / (4 * scale)
    ) ** 2 < 1
    labels = np.zeros(liver.shape, np.uint8)
    labels[liver] = 1
    labels[tumour & liver] = 2
    ct = np.where(liver, 110.0, 30.0).astype(np.float32)
    grid = labels[:, :: size // 32, :: size // 32]
    heat = {"liver": (grid >= 1).astype(np.float32), "tumor": (grid == 2).astype(np.float32)}
    return {"ct": ct, "labels": labels, "heatmaps": heat, "spacing": (2.5, 0.8, 0.8)}


def test_slices_run_from_superior_to_inferior():
    labels = synthetic_case(64)["labels"]
    chosen = choose_slices(labels)
    assert chosen == sorted(chosen, reverse=True) and len(chosen) == 4
    assert int((labels == 2).sum(axis=(1, 2)).argmax()) in chosen
    assert int((labels >= 1).sum(axis=(1, 2)).argmax()) in chosen  # the liver map is strongest


def test_title_says_what_the_case_is():
    case = synthetic_case(64)
    text = describe_case("case_007", case["labels"], case["spacing"])
    voxel_ml = 2.5 * 0.8 * 0.8 / 1000
    liver_ml = (case["labels"] >= 1).sum() * voxel_ml
    assert text.startswith("case_007: liver ") and f"{liver_ml:,.0f} mL" in text
    assert "1 tumour," in text
    assert "no tumour found" in describe_case("x", case["labels"] == 1, case["spacing"])


def outline_widths(tile: np.ndarray, colour: tuple[int, int, int]) -> list[int]:
    """Widths of the runs of ``colour`` along each row of a tile crossing an outline."""
    hits = np.all(tile == colour, axis=-1)
    widths = []
    for row in hits:
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0])))[::2]
        widths += runs.tolist()
    return widths


@pytest.mark.parametrize("size", [64, 512])
def test_outlines_stay_visible_and_the_footer_holds_the_colour_bar(tmp_path, size: int):
    case = synthetic_case(size)
    path = render_overview(
        tmp_path / "overview.png",
        case["ct"],
        case["labels"],
        case["heatmaps"],
        case["spacing"],
        title="case_007",
        slice_number=lambda index: 100 + index,
    )
    image = np.asarray(Image.open(path).convert("RGB"))
    rows = len(choose_slices(case["labels"]))
    top = overview.TITLE_HEIGHT + overview.HEADER_HEIGHT
    assert image.shape == (
        top + rows * overview.TILE + overview.FOOTER_HEIGHT,
        3 * overview.TILE,
        3,
    )
    first_tile = image[top : top + overview.TILE, : overview.TILE]
    liver = overview._class_colour("liver")
    widths = outline_widths(first_tile, liver)
    assert widths and np.median(widths) >= overview.OUTLINE_PIXELS  # 2 px at 64² and 512²
    heat_tile = image[top : top + overview.TILE, overview.TILE : 2 * overview.TILE]
    assert np.all(heat_tile == overview.REGION_ON_HEAT, axis=-1).any()  # explained region
    footer = image[top + rows * overview.TILE :]
    bar = footer[overview.BAR_OFFSET + 2 : overview.BAR_OFFSET + overview.BAR_HEIGHT - 2]
    red, green, blue = (bar[..., channel].astype(int) for channel in range(3))
    assert ((red > 200) & (green < 60) & (blue < 30)).any()  # black through red ...
    assert ((red > 240) & (green > 240) & (blue > 240)).any()  # ... to white
