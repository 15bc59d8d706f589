"""The review score: which liver slices a clinician should check, from what is measured.

Every slice with predicted liver (at least ``MIN_REGION_VOXELS`` pixels on the map grid) gets
a few features from measures the pipeline already has (:func:`slice_features`):

- ``outsideLiver``: share of the liver heatmap's mass outside the predicted liver (5 mm
  margin), one minus the inside fraction of :mod:`explanation_quality`;
- ``pointingMiss``: 1 when the liver heatmap's hottest pixel lies outside that region;
- ``borderUncertainty``: mean uncertainty in the liver's boundary band (review rule (c));
- ``liverUncertainty``: mean uncertainty over the predicted liver on the slice;
- ``outsideBody``: share of the liver heatmap's mass on air (outside the body outline);
- ``nearEnd``: 1 at the liver's first or last slice, falling linearly to 0 at ``END_MM``;
- ``smallArea``: 1 minus the liver's area on the slice over its largest slice's area;
- ``methodDisagreement``: 1 minus the correlation of the liver heatmap with the mean of the
  other methods' liver heatmaps on the slice (measured only when two or more methods run).

A logistic model (:class:`ScoreModel`, coefficients, feature scaling and threshold read from
``Resources/Models/review_score.json``; fitted by :mod:`review_calibration`) turns them into
the probability that the slice's liver Dice is below 0.8. Slices at or above the threshold are
flagged; each gets the reason of the feature that adds most to its score, and neighbouring
flagged slices with the same reason become one item (:func:`score_review_items`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from ..constants import LIVER
from .review_rules import (
    ATTENTION_ON_BACKGROUND,
    LOW_ATTENTION_INSIDE,
    MIN_REGION_VOXELS,
    UNCERTAIN,
    UNCERTAINTY_METHOD,
    ReviewItem,
)

FEATURES = (
    "outsideLiver",
    "pointingMiss",
    "borderUncertainty",
    "liverUncertainty",
    "outsideBody",
    "nearEnd",
    "smallArea",
    "methodDisagreement",
)
BODY_HU = -500.0  # pixels above this (holes filled) are the body
END_MM = 30.0
LIVER_END = "liver-end"
METHODS_DISAGREE = "methods-disagree"
POSITION_METHOD = "position"  # the ``method`` of items raised by position or size
SCORE_MODEL = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "review_score.json"
# The reason (kind, method) each feature stands for; "method" None: the heatmap method.
_KIND = {
    "outsideLiver": LOW_ATTENTION_INSIDE,
    "pointingMiss": LOW_ATTENTION_INSIDE,
    "borderUncertainty": UNCERTAIN,
    "liverUncertainty": UNCERTAIN,
    "outsideBody": ATTENTION_ON_BACKGROUND,
    "nearEnd": LIVER_END,
    "smallArea": LIVER_END,
    "methodDisagreement": METHODS_DISAGREE,
}


# --- features ------------------------------------------------------------------------------
def body_outline(ct_on_map_grid: np.ndarray, threshold_hu: float = BODY_HU) -> np.ndarray:
    """Per slice, pixels above ``threshold_hu`` with their holes filled (lungs and bowel gas
    count as body; the air around the patient does not)."""
    body = np.asarray(ct_on_map_grid) > threshold_hu
    return np.stack([ndimage.binary_fill_holes(plane) for plane in body]) if body.size else body


@dataclass
class SliceFeatures:
    """The features of the scored slices (canonical indices, ascending) of one case."""

    slices: np.ndarray  # int, canonical slice indices
    values: np.ndarray  # (slices, len(FEATURES)) float64, NaN where not measured
    area_share: np.ndarray  # liver area / largest liver area, per scored slice
    end: np.ndarray  # "upper" or "lower": the liver end nearer to each scored slice

    def column(self, name: str) -> np.ndarray:
        """One feature's values."""
        return self.values[:, FEATURES.index(name)]


def slice_features(
    heatmap: np.ndarray | None,
    map_labels: np.ndarray,
    slice_mm: float,
    inside_fraction: Sequence[float] | None,
    pointing: Sequence[float] | None,
    band_uncertainty: np.ndarray | None,
    uncertainty: np.ndarray | None,
    body: np.ndarray | None,
    other_heatmaps: Sequence[np.ndarray] = (),
) -> SliceFeatures:
    """Features of every slice with at least ``MIN_REGION_VOXELS`` of predicted liver.

    ``heatmap`` is the liver heatmap and ``map_labels`` the labels, both on the map grid;
    ``inside_fraction`` and ``pointing`` are its per-slice measures (canonical order), and
    ``band_uncertainty`` the per-slice boundary-band means of :mod:`explanation_quality`.
    ``other_heatmaps`` are the other methods' liver heatmaps (same grid), for
    ``methodDisagreement``.
    """
    organ = map_labels >= LIVER
    counts = organ.reshape(organ.shape[0], -1).sum(axis=1)
    slices = np.flatnonzero(counts >= MIN_REGION_VOXELS)
    values = np.full((slices.size, len(FEATURES)), np.nan)
    if not slices.size:
        return SliceFeatures(slices, values, np.zeros(0), np.zeros(0, dtype="<U5"))
    if inside_fraction is not None and pointing is not None:
        inside = np.asarray(inside_fraction, dtype=np.float64)[slices]
        values[:, 0] = np.where(np.isnan(inside), 1.0, 1.0 - inside)
        hits = np.asarray(pointing, dtype=np.float64)[slices]
        values[:, 1] = 1.0 - np.nan_to_num(hits, nan=0.0)
    if band_uncertainty is not None:
        values[:, 2] = np.asarray(band_uncertainty)[slices]
    for row, index in enumerate(slices):
        if uncertainty is not None:
            values[row, 3] = float(uncertainty[index].mean(where=organ[index], dtype=np.float64))
        if body is not None and heatmap is not None:
            total = float(heatmap[index].sum(dtype=np.float64))
            outside = float(heatmap[index].sum(where=~body[index], dtype=np.float64))
            values[row, 4] = outside / total if total > 0 else 0.0
    present = np.flatnonzero(counts > 0)
    below, above = (slices - present[0]) * slice_mm, (present[-1] - slices) * slice_mm
    values[:, 5] = np.clip(1.0 - np.minimum(below, above) / END_MM, 0.0, 1.0)
    area_share = counts[slices] / counts.max()
    values[:, 6] = 1.0 - area_share
    if heatmap is not None and len(other_heatmaps):
        others = np.mean([np.asarray(m, dtype=np.float64) for m in other_heatmaps], axis=0)
        values[:, 7] = [1.0 - _correlation(heatmap[i], others[i]) for i in slices]
    end = np.where(above <= below, "upper", "lower")  # canonical slices run feet to head
    return SliceFeatures(slices, values, area_share, end)


def _correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson correlation of two maps' pixels; NaN when either is constant."""
    a, b = np.ravel(first).astype(np.float64), np.ravel(second).astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / norm if norm > 0 else math.nan


# --- the model -----------------------------------------------------------------------------
@dataclass
class ScoreModel:
    """A logistic regression on standardised features: ``p = 1 / (1 + exp(-(b + w·z)))``
    with ``z = (x - mean) / scale``. A feature not measured on a slice (NaN: no second
    method, no uncertainty) is left out and the measured ones' weights are scaled up to the
    same total (:func:`weighted_terms`)."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coefficients: list[float]
    intercept: float
    threshold: float  # flag slices with p >= threshold
    calibration: dict[str, Any] = field(default_factory=dict)

    def standardised(self, values: np.ndarray) -> np.ndarray:
        """``(x - mean) / scale``, NaN where not measured; columns in ``features`` order."""
        columns = [FEATURES.index(name) for name in self.features]
        return (np.asarray(values, dtype=np.float64)[:, columns] - self.mean) / self.scale

    def probability(self, values: np.ndarray) -> np.ndarray:
        """The probability that each slice's liver Dice is below 0.8."""
        logits = self.intercept + self.contributions(values).sum(axis=1)
        return 1.0 / (1.0 + np.exp(-logits))

    def contributions(self, values: np.ndarray) -> np.ndarray:
        """Each feature's share of the logit (slices, features)."""
        return weighted_terms(self.standardised(values), np.asarray(self.coefficients))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreModel:
        """Read the form of :meth:`to_dict`; raises ``ValueError`` for an unknown feature."""
        unknown = [name for name in data["features"] if name not in FEATURES]
        if unknown:
            raise ValueError(f"review score: unknown features {unknown}; known: {FEATURES}")
        return cls(**data)


def weighted_terms(z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``w_j z_j`` per slice and feature; where features are missing (NaN), the measured
    ones' terms are scaled by ``sum |w| / sum |w measured|`` (0 when none is measured)."""
    z = np.asarray(z, dtype=np.float64)
    measured = ~np.isnan(z)
    total = float(np.abs(weights).sum())
    present = (np.abs(weights) * measured).sum(axis=1)
    factor = np.divide(total, present, out=np.zeros_like(present), where=present > 0)
    return np.where(measured, z, 0.0) * weights * factor[:, None]


def load_score_model(path: str | Path = SCORE_MODEL) -> ScoreModel | None:
    """The calibrated review score, or None when ``path`` does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    return ScoreModel.from_dict(json.loads(path.read_text(encoding="utf-8")))


def fit_logistic(
    values: np.ndarray, outcome: np.ndarray, l2: float = 1.0, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mean, scale, coefficients and intercept of an L2-penalised logistic regression on
    standardised features (Newton's method; missing values count as the mean)."""
    x = np.asarray(values, dtype=np.float64)
    mean = np.nanmean(x, axis=0)
    scale = np.nanstd(x, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)
    mean = np.nan_to_num(mean, nan=0.0)
    z = np.nan_to_num((x - mean) / scale, nan=0.0)
    design = np.hstack([np.ones((z.shape[0], 1)), z])
    y = np.asarray(outcome, dtype=np.float64)
    weights = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0  # the intercept is not penalised
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ weights)))
        gradient = design.T @ (p - y) + penalty * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return mean, scale, weights[1:], float(weights[0])


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve (ties count one half); NaN without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- the review list -----------------------------------------------------------------------
MERGE_GAP = 3  # flagged slices this close with the same reason are one place to look at


def score_review_items(
    features: SliceFeatures,
    model: ScoreModel,
    method: str = "gradcam",
    method_label: str = "Grad-CAM",
) -> list[ReviewItem]:
    """Flagged slices (probability >= the threshold) as items, neighbouring slices with the
    same reason (at most ``MERGE_GAP`` slices apart, whatever lies between) merged into one
    (its ``slice`` the highest-scoring, ``first_slice`` and ``last_slice`` the range); highest
    score first. Reasons name no slice numbers."""
    if not features.slices.size:
        return []
    probability = model.probability(features.values)
    contributions = model.contributions(features.values)
    top = [model.features[j] for j in np.argmax(contributions, axis=1)]
    flagged = np.flatnonzero(probability >= model.threshold)
    groups: list[list[int]] = []
    for row in flagged:  # a slice flagged for another reason in between does not split a group
        near = (
            group
            for group in reversed(groups)
            if _KIND[top[group[0]]] == _KIND[top[row]]
            and features.slices[row] - features.slices[group[-1]] <= MERGE_GAP
        )
        group = next(near, None)
        if group is None:
            groups.append([int(row)])
        else:
            group.append(int(row))
    items = [
        _item(features, rows, probability, _KIND[top[rows[0]]], method, method_label)
        for rows in groups
    ]
    return sorted(items, key=lambda i: (-i.severity, i.slice))


def _item(
    features: SliceFeatures,
    rows: list[int],
    probability: np.ndarray,
    kind: str,
    method: str,
    method_label: str,
) -> ReviewItem:
    worst = max(rows, key=lambda r: probability[r])
    reason = _reason(features, rows, kind, method_label)
    item_method = {UNCERTAIN: UNCERTAINTY_METHOD, LIVER_END: POSITION_METHOD}.get(kind, method)
    return ReviewItem(
        int(features.slices[worst]),
        LIVER,
        item_method,
        float(probability[worst]),
        reason,
        kind,
        first_slice=int(features.slices[rows[0]]),
        last_slice=int(features.slices[rows[-1]]),
    )


def _reason(features: SliceFeatures, rows: list[int], kind: str, label: str) -> str:
    """One plain sentence: what was measured and what to check."""
    if kind == LOW_ATTENTION_INSIDE:
        inside = 1.0 - float(np.nanmax(features.column("outsideLiver")[rows]))
        return (
            f"the liver {label} looks largely beside the predicted liver (as little as "
            f"{inside:.0%} of it inside): check that the liver outline is complete and takes "
            "in no neighbouring organ"
        )
    if kind == ATTENTION_ON_BACKGROUND:
        outside = float(np.nanmax(features.column("outsideBody")[rows]))
        return (
            f"up to {outside:.0%} of the liver {label} lies outside the body: check the liver "
            "outline here; the network may be reacting to an artefact or the image edge"
        )
    if kind == UNCERTAIN:
        band = features.column("borderUncertainty")[rows]
        mean = float(np.nanmax(band)) if np.isfinite(band).any() else math.nan
        measured = f" (mean {mean:.2f} near the border)" if math.isfinite(mean) else ""
        return (
            f"the network is unsure where the liver ends{measured}: check the liver border "
            "on these slices"
        )
    if kind == METHODS_DISAGREE:
        agreement = 1.0 - float(np.nanmax(features.column("methodDisagreement")[rows]))
        return (
            f"the liver {label} and the other explanation methods point at different places "
            f"(correlation down to {agreement:.2f}): the reason for the outline is not "
            "settled here; check the liver border on these slices"
        )
    share = float(np.min(features.area_share[rows]))
    end = "upper (head)" if features.end[rows[0]] == "upper" else "lower (feet)"
    return (
        f"the {end} end of the liver, where its outline is small (down to {share:.0%} of "
        "the largest slice): check that the liver's tip is neither cut short nor extended "
        "into a neighbouring organ"
    )
