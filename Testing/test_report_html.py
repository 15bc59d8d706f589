"""The HTML case report and its per-slice figures, on small synthetic canonical volumes."""

from __future__ import annotations

import base64
import io
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
from LiverXAILib.report import figures as report_figures
from LiverXAILib.report.figures import choose_report_slices, render_slice_figure
from LiverXAILib.report.html import render_report_html, write_report_html
from PIL import Image

SHAPE = (20, 96, 96)
SPACING = (2.5, 0.8, 0.8)
HOSTILE = '<script>alert("x")</script>'


class Page(HTMLParser):
    """Collects the tags, their attributes and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(self.text)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


@pytest.fixture(scope="module")
def case() -> dict[str, np.ndarray | dict]:
    depth, rows, columns = SHAPE
    z, y, x = np.mgrid[:depth, :rows, :columns].astype(np.float32)
    liver = ((z - 10) / 8) ** 2 + ((y - 45) / 25) ** 2 + ((x - 40) / 22) ** 2 < 1
    tumour = ((z - 12) / 3) ** 2 + ((y - 42) / 6) ** 2 + ((x - 36) / 6) ** 2 < 1
    labels = np.zeros(SHAPE, np.uint8)
    labels[liver] = 1
    labels[tumour & liver] = 2
    ct = np.full(SHAPE, 40.0, np.float32)
    ct[liver] = 110.0
    ct[labels == 2] = 60.0

    def blob(cz: float, cy: float, cx: float, size: float) -> np.ndarray:
        distance = ((z - cz) / size) ** 2 + ((y - cy) / size) ** 2 + ((x - cx) / size) ** 2
        return np.exp(-distance).astype(np.float32)

    heatmaps = {
        "gradcam": {"liver": blob(10, 45, 40, 10), "tumor": blob(12, 42, 36, 4)},
        "ig": {"liver": blob(10, 50, 45, 8), "tumor": blob(12, 44, 38, 3)},
    }
    uncertainty = np.zeros(SHAPE, np.float32)
    uncertainty[5] = 0.9 * liver[5]
    return {"ct": ct, "labels": labels, "heatmaps": heatmaps, "uncertainty": uncertainty}


@pytest.fixture(scope="module")
def figures(case) -> list[tuple[str, bytes]]:
    slices = choose_report_slices(case["labels"], [12, 7], case["uncertainty"], count=3)
    return [
        (
            f"Slice {index} {HOSTILE}",
            render_slice_figure(
                case["ct"],
                case["labels"],
                case["heatmaps"],
                case["uncertainty"],
                SPACING,
                index,
                {"gradcam": "Grad-CAM", "ig": "Integrated Gradients"},
            ),
        )
        for index in slices
    ]


def full_report() -> dict:
    return {
        "input": "/data/case_007.nii.gz",
        "modelName": "unet-demo",
        "modelInfo": {
            "architecture": "2.5D U-Net",
            "input_size": [256, 256],
            "num_slices": 5,
            "training_data": ["LiTS"],
            "notes": "demo",
            "created": "2024-01-01",
        },
        "device": "cpu",
        "timings": {"segment": 2.5, "explain": 12.25, "total": 15.0},
        "liverVolumeMl": 1523.4,
        "tumorVolumeMl": 23.7,
        "tumorCount": 2,
        "tumorVolumesMl": [18.25, 5.5],
        "tumorDiametersMm": [31.5],
        "tumorConfidences": [0.93, 0.48],
        "reviewItems": [
            {
                "slice": 13,
                "class": "tumor",
                "method": "gradcam",
                "severity": 0.8,
                "reason": f"heat outside the tumour {HOSTILE}",
                "kind": "outside",
            },
            {
                "slice": 8,
                "firstSlice": 6,
                "lastSlice": 9,
                "class": "liver",
                "method": "ig",
                "severity": 0.2,
                "reason": "peak outside the liver",
                "kind": "pointing",
            },
        ],
        "explanationQuality": {
            "methods": {
                "gradcam": {
                    "label": "Grad-CAM",
                    "normalization": "volume max",
                    "layer": "decoder.1",
                    "sanity": "passed model-randomisation check",
                },
                "ig": {
                    "label": "Integrated Gradients",
                    "normalization": "99th percentile",
                    "layer": None,
                    "sanity": "FAILS model-randomisation check: SSIM 0.9",
                },
            },
            "perClass": {
                "gradcam": {
                    "liver": {
                        "insideFraction": 0.914,
                        "pointingGameHitRate": 1.0,
                        "slicesExplained": 17,
                    },
                    "tumor": {
                        "insideFraction": 0.5,
                        "pointingGameHitRate": 0.75,
                        "slicesExplained": 4,
                    },
                },
                "ig": {"liver": {"insideFraction": 0.42, "pointingGameHitRate": None}},
            },
            "agreement": [{"methods": ["gradcam", "ig"], "class": "liver", "spearman": 0.37}],
        },
        "uncertainty": {"method": "test-time augmentation: flip", "meanInLiver": 0.05},
    }


def images(page: Page) -> list[Image.Image]:
    sources = [value or "" for tag, name, value in page.attributes if (tag, name) == ("img", "src")]
    prefix = "data:image/png;base64,"
    assert all(source.startswith(prefix) for source in sources)
    return [Image.open(io.BytesIO(base64.b64decode(s[len(prefix) :]))) for s in sources]


def expected_width(panels: int, bars: int) -> float:
    """Figure width in pixels from the layout constants (panels and colour bars in one row)."""
    f = report_figures
    inches = 2 * f.MARGIN + panels * f.PANEL_WIDTH + bars * f.BAR_SLOT_WIDTH
    return (inches + f.GAP * (panels + bars - 1)) * f.DPI


def test_report_slices_put_review_slices_first_without_duplicates(case):
    labels, uncertainty = case["labels"], case["uncertainty"]
    tumour_slice = int((labels == 2).sum(axis=(1, 2)).argmax())
    chosen = choose_report_slices(labels, [12, 7, 12, 3, 99], uncertainty, count=4)
    assert chosen[:2] == [12, 7]
    assert len(chosen) == len(set(chosen)) == 4
    assert tumour_slice in chosen
    assert all(0 <= index < SHAPE[0] for index in chosen)
    assert all(labels[index].any() for index in chosen[2:])

    without_review = choose_report_slices(labels, [], uncertainty, count=3)
    assert without_review[0] == tumour_slice
    assert 5 in without_review  # the most uncertain liver slice
    assert choose_report_slices(labels, [12], None, count=0) == []
    assert choose_report_slices(np.zeros(SHAPE, np.uint8), [], None, count=2) != []


def test_slice_figure_is_one_wide_png_with_physical_aspect(case, figures):
    image = Image.open(io.BytesIO(figures[0][1]))
    assert image.format == "PNG"
    assert image.width > 3 * image.height
    # CT, prediction, four heat panels, uncertainty; two colour bars.
    assert abs(image.width - expected_width(7, 2)) <= 2
    assert 150 < image.height < 600

    no_extras = render_slice_figure(
        case["ct"], case["labels"], {}, None, SPACING, 12, hu_window=(-100.0, 200.0)
    )
    plain = Image.open(io.BytesIO(no_extras))
    assert abs(plain.width - expected_width(2, 0)) <= 2
    assert plain.height == image.height

    tall = render_slice_figure(case["ct"], case["labels"], {}, None, (2.5, 1.6, 0.8), 12)
    assert Image.open(io.BytesIO(tall)).height > plain.height + 100


def test_slice_figure_leaves_no_pyplot_figures(case):
    render_slice_figure(case["ct"], case["labels"], {}, None, SPACING, 3)
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


def test_full_report_renders_every_section(figures):
    text = render_report_html(full_report(), figures)
    page = parse(text)
    visible = page.visible
    for expected in (
        "case_007",
        "1,523.4",
        "23.7",
        "18.25",
        "31.5",
        "93",
        "heat outside the tumour",
        "peak outside the liver",
        "6–9",  # a range of neighbouring slices
        "Grad-CAM",
        "Integrated Gradients",
        "91.4",
        "0.37",
        "test-time augmentation: flip",
        "15.0",
        "How to read this",
        "5\xa0mm margin",
        "normalised predictive entropy",
    ):
        assert expected in visible, expected
    assert "FAILS" in visible and 'class="badge bad"' in text and 'class="warning"' in text
    assert "n/a" in visible  # second lesion's diameter, IG's pointing game
    pictures = images(page)
    assert len(pictures) == len(figures) == page.tags.count("figure")
    for picture, (_, png) in zip(pictures, figures, strict=True):
        assert picture.format == "PNG" and picture.width > picture.height
        assert picture.size == Image.open(io.BytesIO(png)).size


def test_hostile_strings_are_escaped(figures):
    report = full_report()
    report["input"] = '"><img src=x onerror=alert(1)>.nii.gz'
    report["modelName"] = HOSTILE
    report["explanationQuality"]["methods"]["gradcam"]["label"] = HOSTILE
    text = render_report_html(report, figures)
    page = parse(text)
    assert "script" not in page.tags
    assert "<script" not in text.lower()
    assert "&lt;script&gt;" in text
    assert HOSTILE in page.visible
    assert len(images(page)) == len(figures)  # the injected <img> stayed text


def test_no_external_urls():
    page = parse(render_report_html(full_report(), [("figure", b"\x89PNG fake")]))
    links = [value or "" for _, name, value in page.attributes if name in ("src", "href")]
    assert links and all(not v.lower().startswith(("http", "//", "ftp")) for v in links)
    assert "link" not in page.tags and "script" not in page.tags


@pytest.mark.parametrize(
    "report",
    [
        {},
        {"input": None, "modelName": None, "timings": None, "reviewItems": None},
        {
            "input": "case",
            "modelInfo": {"input_size": None, "training_data": None},
            "timings": {"total": None, "odd": "fast"},
            "tumorCount": None,
            "tumorVolumesMl": [None, float("nan")],
            "tumorConfidences": "high",
            "reviewItems": [None, {"slice": None, "severity": "bad"}, {}],
            "explanationQuality": {
                "methods": {"x": None, "y": {"sanity": None}},
                "perClass": {"x": {"liver": None}, "z": None},
                "agreement": [None, {"methods": None, "spearman": float("inf")}],
            },
            "uncertainty": {"method": None, "meanInLiver": float("nan")},
        },
    ],
)
def test_missing_keys_still_render(report):
    text = render_report_html(report, [])
    page = parse(text)
    assert "n/a" in page.visible
    assert "How to read this" in page.visible
    assert "img" not in page.tags


def test_write_report_html_is_atomic(tmp_path, figures):
    path = tmp_path / "case_report.html"
    write_report_html(path, full_report(), figures[:1])
    write_report_html(path, full_report(), figures[:1])
    assert [p.name for p in tmp_path.iterdir()] == ["case_report.html"]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_report_slices_with_uncertainty_on_the_coarser_map_grid(case):
    """The uncertainty lies on the network's grid (e.g. 128 x 128 for a 512 x 512 CT): an
    empty review list must still find the most uncertain liver slice on that grid."""
    labels = case["labels"]
    coarse = case["uncertainty"][:, ::3, ::3]  # (20, 32, 32): as a 96 x 96 CT at 32 x 32
    chosen = choose_report_slices(labels, [], coarse, count=3)
    assert 5 in chosen
    assert len(chosen) == len(set(chosen)) == 3


class FoldedPage(Page):
    """Splits the text into what shows and what sits folded in <details> (its <summary> shows)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.in_summary = False
        self.shown: list[str] = []
        self.folded: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        self.depth += tag == "details"
        self.in_summary |= tag == "summary"

    def handle_endtag(self, tag: str) -> None:
        self.depth -= tag == "details"
        self.in_summary &= tag != "summary"

    def handle_data(self, data: str) -> None:
        super().handle_data(data)
        (self.folded if self.depth and not self.in_summary else self.shown).append(data)


def test_quality_figures_in_plain_words_with_the_technical_terms_folded(figures):
    report = full_report()
    report["explanationQuality"]["methods"]["gradcam"]["sanity"] = (
        "passed: maps decorrelate as layers are randomised (|rho| 0.90 -> 0.06)"
    )
    note = "The network also labelled 12.0 mL as liver on slices 3–5 that the 3D clean-up removed."
    report["explanationQuality"]["cleanUp"] = {"removedLiverMl": 12.0, "note": note}
    page = FoldedPage()
    page.feed(render_report_html(report, figures))
    shown, folded = " ".join(page.shown), " ".join(page.folded)
    for technical in ("ρ", "rho", "Adebayo", "Spearman", "pointing game"):
        assert technical not in shown, technical
    for plain in ("On the region", "Peak on the region", "Slices explained", "Trust check"):
        assert plain in shown, plain
    assert "Adebayo" in folded and "|ρ|" in folded and "Spearman" in folded
    assert "|rho| 0.90" in folded  # the measured sanity check, kept for the technical reader
    assert note in shown and "Technical details" in shown
    assert "FAILS" in shown and "OK" in shown


def test_header_says_how_far_apart_a_25d_models_slices_are(figures):
    report = full_report()
    assert "5 (adjacent slices)" in parse(render_report_html(report, figures)).visible
    report["modelInfo"]["slice_step_mm"] = 3.0
    assert "5 (neighbours 3 mm apart)" in parse(render_report_html(report, figures)).visible
