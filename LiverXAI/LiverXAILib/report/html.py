"""The case report as one self-contained HTML page a clinician can read and print.

Inline CSS, figures as base64 PNG data URIs, no scripts and no external requests. Every value
comes from the JSON report of one case; a missing key or a ``None`` shows as "n/a", and every
string is escaped.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from ..io.atomic import atomic_path
from .explanation_sections import agreement_section, explanation_quality_section
from .format import (
    NA,
    at,
    class_name,
    esc,
    fails,
    fmt,
    items,
    mapping,
    method_labels,
    number,
    percent,
    table,
    td,
    th,
    words,
)

MAX_REVIEW_ROWS = 50

STYLE = """
:root { --ink:#1d2430; --muted:#5b6676; --line:#d5dbe3; --band:#f3f6f9; --accent:#1f5f99;
  --bad:#b3261e; --bad-bg:#fdecea; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.45 "Segoe UI", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1160px; margin: 0 auto; padding: 24px 20px 40px; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 12px; margin-bottom: 8px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; color: var(--accent); margin: 28px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px;
  color: var(--muted); font-size: 14px; }
.meta dt { font-weight: 600; color: var(--ink); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0 12px; }
.card { flex: 1 1 180px; border: 1px solid var(--line); border-radius: 6px;
  padding: 10px 14px; background: var(--band); }
.card .value { font-size: 24px; font-weight: 700; }
.card .label { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 5px 8px; text-align: left;
  vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 700; }
tr.fails td { background: var(--bad-bg); }
.narrow { width: auto; min-width: 40%; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px;
  font-weight: 700; white-space: nowrap; }
.badge.bad { color: #fff; background: var(--bad); }
.badge.ok { color: #fff; background: var(--ok); }
.warning { border: 2px solid var(--bad); background: var(--bad-bg); color: var(--bad);
  border-radius: 6px; padding: 8px 12px; margin: 10px 0; font-weight: 600; }
.note { color: var(--muted); font-size: 13px; }
.bar { display: inline-block; width: 110px; height: 10px; background: #e6e9ee;
  border-radius: 5px; vertical-align: middle; margin-right: 6px; overflow: hidden; }
.bar span { display: block; height: 100%; }
.sev-high { background: #c62828; } .sev-mid { background: #ef8f00; }
.sev-low { background: #7cb342; }
figure { margin: 14px 0 22px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
.howto { background: var(--band); border-left: 4px solid var(--accent); padding: 8px 16px; }
.info { border-left: 4px solid var(--accent); background: var(--band); padding: 6px 12px;
  font-size: 14px; }
details { margin: 6px 0 12px; } summary { cursor: pointer; color: var(--muted); font-size: 13px; }
.howto li { margin: 4px 0; }
* { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
@media print {
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; }
  figure, tr, .card, .warning { break-inside: avoid; }
}
"""


def render_report_html(report: Mapping[str, Any], figures: Sequence[tuple[str, bytes]]) -> str:
    """The whole report page for one case's JSON report and its (caption, PNG bytes) figures."""
    report = report if isinstance(report, Mapping) else {}
    case = _case_name(report.get("input"))
    quality = mapping(report.get("explanationQuality"))
    labels = method_labels(quality)
    body = [
        _header(report, case),
        _input_warnings(report.get("warnings")),
        _sanity_warning(quality, labels),
        _summary(report),
        _timings(mapping(report.get("timings"))),
        explanation_quality_section(quality, labels),
        agreement_section(quality, labels),
        _uncertainty(mapping(report.get("uncertainty"))),
        _review(report.get("reviewItems"), labels),
        _figures(figures),
        _how_to_read(),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>LiverXAI report – {esc(case)}</title>\n<style>{STYLE}</style>\n</head>\n"
        "<body>\n<main>\n"
        + "\n".join(part for part in body if part)
        + "\n</main>\n</body>\n</html>\n"
    )


def write_report_html(
    path: Path, report: Mapping[str, Any], figures: Sequence[tuple[str, bytes]]
) -> None:
    """Write the report page atomically (temporary file, then rename)."""
    text = render_report_html(report, figures)
    with atomic_path(path, suffix=".html") as temporary:
        temporary.write_text(text, encoding="utf-8")


# Formatting helpers -------------------------------------------------------------------------


def _case_name(value: Any) -> str:
    if value is None:
        return NA
    name = PurePath(str(value)).name or str(value)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# Sections -----------------------------------------------------------------------------------


def _slices_per_input(info: Mapping[str, Any]) -> Any:
    """Slices per input: "3 (neighbours 3 mm apart)" for a 2.5D model with a fixed step,
    else the count."""
    count, step = info.get("num_slices"), info.get("slice_step_mm")
    if isinstance(count, int) and count > 1 and isinstance(step, int | float):
        return f"{count} (neighbours {step:g} mm apart)"
    if isinstance(count, int) and count > 1:
        return f"{count} (adjacent slices)"
    return count


def _header(report: Mapping[str, Any], case: str) -> str:
    info = mapping(report.get("modelInfo"))
    training = items(info.get("training_data"))
    input_size = info.get("input_size")
    if isinstance(input_size, list | tuple):
        input_size = " × ".join(str(v) for v in input_size)
    rows = [
        ("Input", esc(report.get("input"))),
        ("Generated", esc(datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))),
        ("Model", esc(report.get("modelName"))),
        ("Architecture", esc(info.get("architecture"))),
        ("Input size", esc(input_size)),
        ("Slices per input", esc(_slices_per_input(info))),
        ("Training data", ", ".join(esc(t) for t in training) if training else NA),
        ("Model created", esc(info.get("created"))),
        ("Device", esc(report.get("device"))),
    ]
    series = mapping(report.get("source"))
    if series.get("kind") == "dicom":
        described = " ".join(
            str(series.get(key)) for key in ("seriesNumber", "seriesDescription") if series.get(key)
        )
        rows.insert(1, ("DICOM series", esc(f"{described} ({series.get('seriesInstanceUID')})")))
    if info.get("notes"):
        rows.append(("Model notes", esc(info.get("notes"))))
    meta = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return (
        f"<header><h1>LiverXAI report: {esc(case)}</h1>"
        '<p class="note">Automatic liver and liver-tumour segmentation with explanation '
        "heatmaps. For research use; every finding must be confirmed by a clinician.</p>"
        f'<dl class="meta">{meta}</dl></header>'
    )


def _input_warnings(warnings: Any) -> str:
    """The input's and the result's warnings (odd spacing, non-finite voxels, cut-off liver)."""
    listed = "".join(f"<li>{esc(text)}</li>" for text in items(warnings))
    return f'<div class="warning">⚠ Please note:<ul>{listed}</ul></div>' if listed else ""


def _sanity_warning(quality: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    methods = mapping(quality.get("methods"))
    failing = [
        labels.get(key, key) for key, info in methods.items() if fails(mapping(info).get("sanity"))
    ]
    if not failing:
        return ""
    names = ", ".join(esc(name) for name in failing)
    return (
        f'<div class="warning">⚠ Sanity check failed for: {names}. These heatmaps barely '
        "change when the network's weights are randomised, so they must not be used to judge "
        "the segmentation."
        "</div>"
    )


def _summary(report: Mapping[str, Any]) -> str:
    cards = [
        (fmt(report.get("liverVolumeMl"), 1, "&nbsp;mL"), "Liver volume"),
        (fmt(report.get("tumorVolumeMl"), 1, "&nbsp;mL"), "Tumour volume (all lesions)"),
        (fmt(report.get("tumorCount"), 0), "Tumours found"),
    ]
    parts = ['<section><h2>Case summary</h2><div class="cards">']
    parts += [
        f'<div class="card"><div class="value">{value}</div><div class="label">{label}</div></div>'
        for value, label in cards
    ]
    parts.append("</div>")
    volumes = items(report.get("tumorVolumesMl"))
    diameters = items(report.get("tumorDiametersMm"))
    confidences = items(report.get("tumorConfidences"))
    lesions = max(len(volumes), len(diameters), len(confidences))
    if lesions:
        head = [
            th("Lesion"),
            th("Volume", True),
            th("Longest axial diameter", True),
            th("Confidence", True),
        ]
        rows = [
            "<tr>"
            + td(str(i + 1))
            + td(fmt(at(volumes, i), 2, "&nbsp;mL"), True)
            + td(fmt(at(diameters, i), 1, "&nbsp;mm"), True)
            + td(percent(at(confidences, i)), True)
            + "</tr>"
            for i in range(lesions)
        ]
        parts.append("<h3>Lesions</h3>")
        parts.append(table(head, rows, "narrow"))
    else:
        parts.append('<p class="note">No per-lesion measurements in this report.</p>')
    parts.append("</section>")
    return "".join(parts)


def _uncertainty(uncertainty: Mapping[str, Any]) -> str:
    if not uncertainty:
        return ""
    rows = []
    for key, value in uncertainty.items():
        digits = 0 if isinstance(value, int) else 3
        shown = fmt(value, digits) if number(value) is not None else esc(value)
        rows.append("<tr>" + td(esc(words(key))) + td(shown) + "</tr>")
    return (
        "<section><h2>Uncertainty</h2>"
        + table([th("Measure"), th("Value")], rows, "narrow")
        + "</section>"
    )


def _review(review_items: Any, labels: Mapping[str, str]) -> str:
    entries = [item for item in items(review_items) if isinstance(item, Mapping)]
    if not entries:
        return (
            "<section><h2>Slices to review</h2>"
            '<p class="note">No slices were flagged for review.</p></section>'
        )
    rows = []
    for item in entries[:MAX_REVIEW_ROWS]:
        method = item.get("method")
        rows.append(
            "<tr>"
            + td(_slices(item), True)
            + td(class_name(item.get("class")))
            + td(esc(labels.get(method, method) if isinstance(method, str) else method))
            + td(esc(item.get("reason")))
            + td(esc(item.get("kind")))
            + td(_severity(item.get("severity")))
            + "</tr>"
        )
    more = len(entries) - MAX_REVIEW_ROWS
    extra = f'<p class="note">… and {more} more in the JSON report.</p>' if more > 0 else ""
    head = [
        th("Slice", True),
        th("Class"),
        th("Method"),
        th("Reason"),
        th("Kind"),
        th("Severity"),
    ]
    return (
        "<section><h2>Slices to review</h2>"
        '<p class="note">Worst first. Slice numbers are as shown in 3D Slicer.</p>'
        + table(head, rows)
        + extra
        + "</section>"
    )


def _slices(item: Mapping[str, Any]) -> str:
    """The item's slice, or its range of neighbouring slices ("19–27")."""
    first, last = number(item.get("firstSlice")), number(item.get("lastSlice"))
    if first is not None and last is not None and first != last:
        return f"{first:.0f}–{last:.0f}"
    return fmt(item.get("slice"), 0)


def _severity(value: Any) -> str:
    severity = number(value)
    if severity is None:
        return NA
    severity = min(max(severity, 0.0), 1.0)
    level = "sev-high" if severity >= 0.66 else "sev-mid" if severity >= 0.33 else "sev-low"
    return (
        f'<span class="bar"><span class="{level}" style="width:{100 * severity:.0f}%"></span>'
        f"</span>{severity:.2f}"
    )


def _figures(figures: Sequence[tuple[str, bytes]]) -> str:
    if not figures:
        return ""
    parts = [
        "<section><h2>Figures</h2>"
        '<p class="note">Each row of panels is one axial slice in radiological view (patient '
        "right on the left): CT, the predicted liver and tumour outlines, one heatmap per "
        "method and class (0–1 colour scale, 1 = the 99th percentile of the map inside the "
        "predicted region; the cyan line is that region), then the uncertainty.</p>"
    ]
    for caption, png in figures:
        data = base64.b64encode(bytes(png)).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    parts.append("</section>")
    return "".join(parts)


def _how_to_read() -> str:
    points = [
        "Heatmaps show where the network looked when it decided; they are not proof that "
        "the segmentation is correct.",
        "Inside fraction is the share of heatmap mass inside the predicted region, with a "
        "5&nbsp;mm margin. A low value means the network relied on tissue outside the region.",
        "A method marked <strong>FAILS</strong> did not pass the model-randomisation sanity "
        "check: its heatmaps barely change when the network's weights are randomised, so they "
        "say little about this network.",
        "Uncertainty is the normalised predictive entropy (0 = certain, 1 = maximally "
        "uncertain); high values along the liver edge are expected, high values inside a "
        "lesion deserve a closer look.",
        "Volumes and diameters come from the automatic segmentation and inherit its errors.",
    ]
    listed = "".join(f"<li>{point}</li>" for point in points)
    return f'<section><h2>How to read this</h2><div class="howto"><ul>{listed}</ul></div></section>'


def _timings(timings: Mapping[str, Any]) -> str:
    if not timings:
        return ""
    ordered = [key for key in timings if key != "total"] + (["total"] if "total" in timings else [])
    rows = [
        ('<tr class="total">' if key == "total" else "<tr>")
        + td(esc(words(key)))
        + td(fmt(timings[key], 1 if (number(timings[key]) or 0) >= 10 else 2, "&nbsp;s"), True)
        + "</tr>"
        for key in ordered
    ]
    return (
        "<section><h2>Timings</h2>"
        + table([th("Step"), th("Time", True)], rows, "narrow")
        + "</section>"
    )
