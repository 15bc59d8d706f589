"""The report's sections on the explanations, in plain words with the details folded.

Each figure is explained in one sentence a clinician can read; the technical terms (inside
fraction, pointing game, Spearman's rank correlation, the sanity checks of Adebayo et al.)
and the method settings are in a ``<details>`` block under each table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .format import (
    NA,
    class_name,
    esc,
    fails,
    fmt,
    items,
    mapping,
    number,
    percent,
    sanity_badge,
    table,
    td,
    th,
)

FIGURES_IN_WORDS = (
    (
        "On the region",
        "how much of the heatmap lies on the predicted liver or tumour (with a "
        "5&nbsp;mm margin); higher is better.",
    ),
    (
        "Peak on the region",
        "on how many of the explained slices the heatmap's hottest point "
        "lies on that region; higher is better.",
    ),
    ("Slices explained", "slices where the class was predicted and the heatmap is not empty."),
    (
        "Trust check",
        "OK when the heatmaps change as the network's learned weights are "
        "scrambled; FAILS means they mostly show the image itself, not what the network learned.",
    ),
)
TECHNICAL_NOTE = (
    "On the region is the inside fraction: the heatmap's mass inside the predicted region "
    "grown in-plane by 5&nbsp;mm, over its total mass. Peak on the region is the pointing game "
    "(Zhang et al. 2016) over the slices where the class is predicted. The trust check is the "
    "pair of sanity checks of Adebayo et al. (2018), cascading model randomisation and label "
    "permutation, judged on Spearman's rank correlation |&rho;| of the maps."
)


def trust_badge(sanity: Any) -> str:
    """OK or FAILS with one plain sentence; the measured details go into the folded block."""
    if fails(sanity):
        return (
            '<span class="badge bad">FAILS</span> barely changes when the network is '
            "scrambled; read it with Grad-CAM beside it"
        )
    if isinstance(sanity, str) and sanity.strip().lower().startswith("pass"):
        return '<span class="badge ok">OK</span> changes with what the network learned'
    return NA


def explanation_quality_section(quality: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """How well each method's heatmaps match the prediction, with the settings folded."""
    methods = mapping(quality.get("methods"))
    per_class = mapping(quality.get("perClass"))
    keys = list(dict.fromkeys([*methods.keys(), *per_class.keys()]))
    heading = "<section><h2>Do the heatmaps match the prediction?</h2>"
    if not keys:
        return heading + '<p class="note">n/a</p>' + clean_up_section(quality) + "</section>"
    rows = []
    for key in keys:
        sanity = mapping(methods.get(key)).get("sanity")
        css = ' class="fails"' if fails(sanity) else ""
        for name, values in (mapping(per_class.get(key)) or {None: {}}).items():
            values = mapping(values)
            absent = values.get("slicesExplained") == 0  # the class was not predicted
            rows.append(
                f"<tr{css}>"
                + td(f"<strong>{esc(labels.get(key, key))}</strong>")
                + td(class_name(name))
                + td("not predicted" if absent else percent(values.get("insideFraction"), 1), True)
                + td("" if absent else percent(values.get("pointingGameHitRate"), 1), True)
                + td(fmt(values.get("slicesExplained"), 0), True)
                + td(trust_badge(sanity))
                + "</tr>"
            )
    head = [th("Method"), th("Class")] + [th(n, n != "Trust check") for n, _ in FIGURES_IN_WORDS]
    words = "".join(f"<li><strong>{name}</strong>: {text}</li>" for name, text in FIGURES_IN_WORDS)
    scale = next((mapping(i).get("normalization") for i in methods.values()), None)
    return (
        heading
        + '<p class="note">A heatmap shows where the network looked when it labelled a class. '
        f'For each method and class:</p><ul class="note">{words}</ul>'
        + table(head, rows)
        + (f'<p class="note">Heatmap colours: {esc(scale)}</p>' if scale else "")
        + clean_up_section(quality)
        + _method_details(methods, labels)
        + "</section>"
    )


def _method_details(methods: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """The folded block: what the figures are called in the literature and each method's
    normalisation, layer, weighting and measured sanity checks."""
    rows = [
        "<tr>"
        + td(esc(labels.get(key, key)))
        + td(esc(mapping(info).get("normalization")))
        + td(esc(mapping(info).get("layer")))
        + td(esc(mapping(info).get("weighting")))
        + td(sanity_badge(mapping(info).get("sanity")))
        + "</tr>"
        for key, info in methods.items()
    ]
    head = [th("Method"), th("Normalisation"), th("Layer"), th("Weighting"), th("Sanity check")]
    return (
        "<details><summary>Technical details</summary>"
        f'<p class="note">{TECHNICAL_NOTE}</p>' + (table(head, rows) if rows else "") + "</details>"
    )


def clean_up_section(quality: Mapping[str, Any]) -> str:
    """What the network labelled and the 3D clean-up removed (not explained), if anything."""
    note = mapping(quality.get("cleanUp")).get("note")
    return f'<p class="info">ℹ {esc(note)}</p>' if isinstance(note, str) and note else ""


def agreement_section(quality: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """Whether two methods' heatmaps point to the same places."""
    entries = [mapping(entry) for entry in items(quality.get("agreement"))]
    if not entries:
        return ""
    rows = []
    for entry in entries:
        pair = [labels.get(m, m) if isinstance(m, str) else m for m in items(entry.get("methods"))]
        score = number(entry.get("spearman"))
        strength = (
            NA
            if score is None
            else "strong"
            if score >= 0.7
            else "moderate"
            if score >= 0.4
            else "weak"
        )
        rows.append(
            "<tr>"
            + td(" vs ".join(esc(m) for m in pair) if pair else NA)
            + td(class_name(entry.get("class")))
            + td(strength)
            + td(fmt(score, 2), True)
            + "</tr>"
        )
    head = [th("Methods"), th("Class"), th("Agreement"), th("Score (−1 to 1)", True)]
    return (
        "<section><h2>Do the methods agree?</h2>"
        '<p class="note">Whether two methods rank the same places as most important. Methods '
        "that agree point to the same regions; when they disagree, one heatmap alone should "
        "not be trusted.</p>"
        + table(head, rows, "narrow")
        + '<details><summary>Technical details</summary><p class="note">The score is '
        "Spearman's rank correlation &rho; of the two maps over the predicted region with a "
        "5&nbsp;mm margin: strong from 0.7, moderate from 0.4.</p></details></section>"
    )
