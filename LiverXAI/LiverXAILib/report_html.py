"""The case report as one self-contained HTML page a clinician can read and print.

Inline CSS, figures as base64 PNG data URIs, no scripts and no external requests. Every value
comes from the JSON report of one case; a missing key or a ``None`` shows as "n/a", and every
string is escaped.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from .atomic import atomic_path

NA = "n/a"
MAX_REVIEW_ROWS = 50
CLASS_DISPLAY = {"liver": "Liver", "tumor": "Tumour"}

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
    quality = _mapping(report.get("explanationQuality"))
    labels = _method_labels(quality)
    body = [
        _header(report, case),
        _input_warnings(report.get("warnings")),
        _sanity_warning(quality, labels),
        _summary(report),
        _timings(_mapping(report.get("timings"))),
        _explanation_quality(quality, labels),
        _agreement(quality, labels),
        _uncertainty(_mapping(report.get("uncertainty"))),
        _review(report.get("reviewItems"), labels),
        _figures(figures),
        _how_to_read(),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>LiverXAI report – {_e(case)}</title>\n<style>{STYLE}</style>\n</head>\n"
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


def _e(value: Any) -> str:
    """Escaped text of any value; None → n/a."""
    return NA if value is None else html.escape(str(value), quote=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    number = _number(value)
    if number is None:
        return _e(value) if isinstance(value, str) and value else NA
    return f"{number:,.{digits}f}{unit}"


def _percent(value: Any, digits: int = 0) -> str:
    number = _number(value)
    return NA if number is None else f"{100 * number:.{digits}f}&nbsp;%"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _at(values: Sequence[Any], index: int) -> Any:
    return values[index] if index < len(values) else None


def _words(key: str) -> str:
    """camelCase or snake_case key → 'Words like this'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(key)).replace("_", " ").strip()
    return spaced[:1].upper() + spaced[1:].lower() if spaced else NA


def _case_name(value: Any) -> str:
    if value is None:
        return NA
    name = PurePath(str(value)).name or str(value)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _class_name(value: Any) -> str:
    return CLASS_DISPLAY.get(value, _e(value)) if isinstance(value, str) else _e(value)


def _table(head: Iterable[str], rows: Iterable[str], css: str = "") -> str:
    header = "".join(head)
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _th(text: str, numeric: bool = False) -> str:
    return f'<th class="num">{text}</th>' if numeric else f"<th>{text}</th>"


def _td(text: str, numeric: bool = False) -> str:
    return f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>"


def _fails(sanity: Any) -> bool:
    return isinstance(sanity, str) and sanity.strip().upper().startswith("FAILS")


def _sanity_badge(sanity: Any) -> str:
    """FAILS (red) or OK (green, only for a text starting with 'pass') and the sanity text."""
    if _fails(sanity):
        detail = re.sub(r"^\s*FAILS[\s:,-]*", "", str(sanity), flags=re.IGNORECASE)
        return f'<span class="badge bad">FAILS</span> {_e(detail)}'
    if isinstance(sanity, str) and sanity.strip().lower().startswith("pass"):
        return f'<span class="badge ok">OK</span> {_e(sanity)}'
    return _e(sanity) if sanity else NA


def _method_labels(quality: Mapping[str, Any]) -> dict[str, str]:
    methods = _mapping(quality.get("methods"))
    return {str(key): str(_mapping(info).get("label") or key) for key, info in methods.items()}


# Sections -----------------------------------------------------------------------------------


def _header(report: Mapping[str, Any], case: str) -> str:
    info = _mapping(report.get("modelInfo"))
    training = _items(info.get("training_data"))
    input_size = info.get("input_size")
    if isinstance(input_size, list | tuple):
        input_size = " × ".join(str(v) for v in input_size)
    rows = [
        ("Input", _e(report.get("input"))),
        ("Generated", _e(datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))),
        ("Model", _e(report.get("modelName"))),
        ("Architecture", _e(info.get("architecture"))),
        ("Input size", _e(input_size)),
        ("Slices per input", _e(info.get("num_slices"))),
        ("Training data", ", ".join(_e(t) for t in training) if training else NA),
        ("Model created", _e(info.get("created"))),
        ("Device", _e(report.get("device"))),
    ]
    series = _mapping(report.get("source"))
    if series.get("kind") == "dicom":
        described = " ".join(
            str(series.get(key)) for key in ("seriesNumber", "seriesDescription") if series.get(key)
        )
        rows.insert(1, ("DICOM series", _e(f"{described} ({series.get('seriesInstanceUID')})")))
    if info.get("notes"):
        rows.append(("Model notes", _e(info.get("notes"))))
    meta = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return (
        f"<header><h1>LiverXAI report: {_e(case)}</h1>"
        '<p class="note">Automatic liver and liver-tumour segmentation with explanation '
        "heatmaps. For research use; every finding must be confirmed by a clinician.</p>"
        f'<dl class="meta">{meta}</dl></header>'
    )


def _input_warnings(warnings: Any) -> str:
    """The input's and the result's warnings (odd spacing, non-finite voxels, cut-off liver)."""
    items = "".join(f"<li>{_e(text)}</li>" for text in _items(warnings))
    return f'<div class="warning">⚠ Please note:<ul>{items}</ul></div>' if items else ""


def _sanity_warning(quality: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    methods = _mapping(quality.get("methods"))
    failing = [
        labels.get(key, key)
        for key, info in methods.items()
        if _fails(_mapping(info).get("sanity"))
    ]
    if not failing:
        return ""
    names = ", ".join(_e(name) for name in failing)
    return (
        f'<div class="warning">⚠ Sanity check failed for: {names}. These heatmaps barely '
        "change when the network's weights are randomised, so they must not be used to judge "
        "the segmentation."
        "</div>"
    )


def _summary(report: Mapping[str, Any]) -> str:
    cards = [
        (_fmt(report.get("liverVolumeMl"), 1, "&nbsp;mL"), "Liver volume"),
        (_fmt(report.get("tumorVolumeMl"), 1, "&nbsp;mL"), "Tumour volume (all lesions)"),
        (_fmt(report.get("tumorCount"), 0), "Tumours found"),
    ]
    parts = ['<section><h2>Case summary</h2><div class="cards">']
    parts += [
        f'<div class="card"><div class="value">{value}</div><div class="label">{label}</div></div>'
        for value, label in cards
    ]
    parts.append("</div>")
    volumes = _items(report.get("tumorVolumesMl"))
    diameters = _items(report.get("tumorDiametersMm"))
    confidences = _items(report.get("tumorConfidences"))
    lesions = max(len(volumes), len(diameters), len(confidences))
    if lesions:
        head = [
            _th("Lesion"),
            _th("Volume", True),
            _th("Longest axial diameter", True),
            _th("Confidence", True),
        ]
        rows = [
            "<tr>"
            + _td(str(i + 1))
            + _td(_fmt(_at(volumes, i), 2, "&nbsp;mL"), True)
            + _td(_fmt(_at(diameters, i), 1, "&nbsp;mm"), True)
            + _td(_percent(_at(confidences, i)), True)
            + "</tr>"
            for i in range(lesions)
        ]
        parts.append("<h3>Lesions</h3>")
        parts.append(_table(head, rows, "narrow"))
    else:
        parts.append('<p class="note">No per-lesion measurements in this report.</p>')
    parts.append("</section>")
    return "".join(parts)


def _explanation_quality(quality: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    methods = _mapping(quality.get("methods"))
    per_class = _mapping(quality.get("perClass"))
    keys = list(dict.fromkeys([*methods.keys(), *per_class.keys()]))
    if not keys:
        return '<section><h2>Explanation quality</h2><p class="note">n/a</p></section>'
    head = [
        _th("Method"),
        _th("Class"),
        _th("Inside fraction", True),
        _th("Pointing game", True),
        _th("Slices explained", True),
        _th("Normalisation"),
        _th("Layer"),
        _th("Sanity check"),
    ]
    rows = []
    for key in keys:
        info = _mapping(methods.get(key))
        sanity = info.get("sanity")
        classes = _mapping(per_class.get(key)) or {None: {}}
        badge = _sanity_badge(sanity)
        for name, values in classes.items():
            values = _mapping(values)
            css = ' class="fails"' if _fails(sanity) else ""
            rows.append(
                f"<tr{css}>"
                + _td(f"<strong>{_e(labels.get(key, key))}</strong>")
                + _td(_class_name(name))
                + _td(_percent(values.get("insideFraction"), 1), True)
                + _td(_percent(values.get("pointingGameHitRate"), 1), True)
                + _td(_fmt(values.get("slicesExplained"), 0), True)
                + _td(_e(info.get("normalization")))
                + _td(_e(info.get("layer")))
                + _td(badge)
                + "</tr>"
            )
    return (
        "<section><h2>Explanation quality</h2>"
        '<p class="note">Inside fraction: share of heatmap mass inside the predicted region '
        "(with a 5&nbsp;mm margin). Pointing game: share of explained slices whose heatmap "
        "peak falls inside that region. Higher is better for both.</p>"
        + _table(head, rows)
        + "</section>"
    )


def _agreement(quality: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    entries = [_mapping(entry) for entry in _items(quality.get("agreement"))]
    if not entries:
        return ""
    rows = []
    for entry in entries:
        pair = [labels.get(m, m) if isinstance(m, str) else m for m in _items(entry.get("methods"))]
        rho = _number(entry.get("spearman"))
        strength = (
            NA if rho is None else "strong" if rho >= 0.7 else "moderate" if rho >= 0.4 else "weak"
        )
        rows.append(
            "<tr>"
            + _td(" vs ".join(_e(m) for m in pair) if pair else NA)
            + _td(_class_name(entry.get("class")))
            + _td(_fmt(rho, 2), True)
            + _td(strength)
            + "</tr>"
        )
    head = [_th("Methods"), _th("Class"), _th("Spearman ρ", True), _th("Agreement")]
    return (
        "<section><h2>Method agreement</h2>"
        '<p class="note">Rank correlation between two methods\' heatmaps. Methods that agree '
        "point to the same regions; disagreement means one explanation alone should not be "
        "trusted.</p>" + _table(head, rows, "narrow") + "</section>"
    )


def _uncertainty(uncertainty: Mapping[str, Any]) -> str:
    if not uncertainty:
        return ""
    rows = []
    for key, value in uncertainty.items():
        digits = 0 if isinstance(value, int) else 3
        shown = _fmt(value, digits) if _number(value) is not None else _e(value)
        rows.append("<tr>" + _td(_e(_words(key))) + _td(shown) + "</tr>")
    return (
        "<section><h2>Uncertainty</h2>"
        + _table([_th("Measure"), _th("Value")], rows, "narrow")
        + "</section>"
    )


def _review(items: Any, labels: Mapping[str, str]) -> str:
    entries = [item for item in _items(items) if isinstance(item, Mapping)]
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
            + _td(_fmt(item.get("slice"), 0), True)
            + _td(_class_name(item.get("class")))
            + _td(_e(labels.get(method, method) if isinstance(method, str) else method))
            + _td(_e(item.get("reason")))
            + _td(_e(item.get("kind")))
            + _td(_severity(item.get("severity")))
            + "</tr>"
        )
    more = len(entries) - MAX_REVIEW_ROWS
    extra = f'<p class="note">… and {more} more in the JSON report.</p>' if more > 0 else ""
    head = [
        _th("Slice", True),
        _th("Class"),
        _th("Method"),
        _th("Reason"),
        _th("Kind"),
        _th("Severity"),
    ]
    return (
        "<section><h2>Slices to review</h2>"
        '<p class="note">Worst first. Slice numbers are as shown in 3D Slicer.</p>'
        + _table(head, rows)
        + extra
        + "</section>"
    )


def _severity(value: Any) -> str:
    number = _number(value)
    if number is None:
        return NA
    number = min(max(number, 0.0), 1.0)
    level = "sev-high" if number >= 0.66 else "sev-mid" if number >= 0.33 else "sev-low"
    return (
        f'<span class="bar"><span class="{level}" style="width:{100 * number:.0f}%"></span>'
        f"</span>{number:.2f}"
    )


def _figures(figures: Sequence[tuple[str, bytes]]) -> str:
    if not figures:
        return ""
    parts = [
        "<section><h2>Figures</h2>"
        '<p class="note">Each row of panels is one axial slice in radiological view (patient '
        "right on the left): CT, the predicted liver and tumour outlines, one heatmap per "
        "method and class (0–1 colour scale; the cyan line is the predicted region), then the "
        "uncertainty.</p>"
    ]
    for caption, png in figures:
        data = base64.b64encode(bytes(png)).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
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
    items = "".join(f"<li>{point}</li>" for point in points)
    return f'<section><h2>How to read this</h2><div class="howto"><ul>{items}</ul></div></section>'


def _timings(timings: Mapping[str, Any]) -> str:
    if not timings:
        return ""
    ordered = [key for key in timings if key != "total"] + (["total"] if "total" in timings else [])
    rows = [
        ('<tr class="total">' if key == "total" else "<tr>")
        + _td(_e(_words(key)))
        + _td(_fmt(timings[key], 1 if (_number(timings[key]) or 0) >= 10 else 2, "&nbsp;s"), True)
        + "</tr>"
        for key in ordered
    ]
    return (
        "<section><h2>Timings</h2>"
        + _table([_th("Step"), _th("Time", True)], rows, "narrow")
        + "</section>"
    )
