"""What a batch case's outputs were made with, recorded in its report (``batch.settings``).

A re-run skips a finished case only when it was made the same way: the same model file (by
SHA-256; its name or path may differ) and the same options that change the outputs
(explained classes and methods, Grad-CAM layer, uncertainty, Integrated Gradients steps and
baseline) and at least the export formats now asked for. Options that do not change the
outputs (device, batch size, 3D display) are not recorded; ``allowNonHU`` is recorded but not
compared: it only lets a non-HU CT through, so the results of a case that passed are the same.
Options that do not apply are normalised away (methods without explained classes, the layer
without a CAM method, the IG settings without Integrated Gradients).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..options import SegmentAndExplainOptions

NOT_COMPARED = ("model", "allowNonHU", "exports")  # model: its SHA-256 is; exports: a subset
LABELS = {
    "explainClasses": "explained classes",
    "explainMethods": "methods",
    "camLayer": "Grad-CAM layer",
    "uncertainty": "uncertainty",
    "integratedGradients": "Integrated Gradients",
}


def run_settings(options: SegmentAndExplainOptions) -> dict[str, Any]:
    """The settings of a run (without exports, see ``case_settings``): the options that
    change the outputs. Resolves the model and hashes its file: raises ``CheckpointError``
    for a model that is unknown or missing."""
    from ..explain.methods import METHODS
    from ..models.catalog import resolve_model, sha256_file

    methods = options.methodsToRun
    uses_layer = any(m in METHODS and METHODS[m].uses_layer for m in methods)
    integrated = {
        "steps": options.integratedGradientsSteps,
        "baseline": options.integratedGradientsBaseline,
    }
    return {
        "model": str(options.model),
        "modelSha256": sha256_file(resolve_model(options.model)),
        "explainClasses": list(options.explainClasses),
        "explainMethods": methods,
        "camLayer": options.camLayer if uses_layer else None,
        "uncertainty": options.uncertainty,
        "integratedGradients": integrated if "integrated-gradients" in methods else None,
        "allowNonHU": options.allowNonHU,
    }


def case_settings(settings: Mapping[str, Any], formats: Sequence[str]) -> dict[str, Any]:
    """A case's settings: the run's plus the export formats written for it."""
    return {**settings, "exports": sorted(set(formats))}


def recorded_settings(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings a case report recorded, None for a report without them."""
    settings = (report.get("batch") or {}).get("settings")
    return settings if isinstance(settings, dict) else None


def _text(value: Any, key: str = "") -> str:
    if value is None:
        return "the model's default" if key == "camLayer" else "none"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def settings_differences(
    recorded: Mapping[str, Any] | None, wanted: Mapping[str, Any]
) -> list[str]:
    """What differs between a case's recorded settings and this run's, one phrase each
    (empty: the case may be skipped)."""
    if recorded is None:
        return ["none recorded: made by an older LiverXAI"]
    differences = []
    if recorded.get("modelSha256") != wanted["modelSha256"]:
        old, new = recorded.get("model", "?"), wanted["model"]
        old_sha, new_sha = str(recorded.get("modelSha256"))[:12], wanted["modelSha256"][:12]
        differences.append(f"model {old} ({old_sha}…) vs {new} ({new_sha}…)")
    for key, new in wanted.items():
        if key in NOT_COMPARED or key == "modelSha256":
            continue
        old = recorded.get(key)
        if _comparable(old) != _comparable(new):
            differences.append(f"{LABELS.get(key, key)}: {_text(old, key)} vs {_text(new, key)}")
    missing = sorted(set(wanted.get("exports") or ()) - set(recorded.get("exports") or ()))
    if missing:
        differences.append(f"exports {_text(missing)} not written")
    return differences


def _comparable(value: Any) -> Any:
    """JSON round-trips turn tuples into lists and keep numbers: compare as JSON would."""
    if isinstance(value, tuple | list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def mismatch_reason(differences: Sequence[str]) -> str:
    """The reason of a finished case that was made with other settings."""
    return (
        f"made with other settings ({'; '.join(differences)}); use overwrite (--overwrite) "
        "to redo it, or another output folder"
    )
