"""Choices Segment & Explain remembers across Slicer sessions: device, batch size, classes.

The parameter node remembers the user's last choices within a scene; these three are machine
preferences, so they live in Slicer's application settings (``qt.QSettings``) and become the
defaults of every new scene. Any object with QSettings' ``value(key, default)`` and
``setValue(key, value)`` works, so this runs without Qt.
"""

from __future__ import annotations

from typing import Any

from ..constants import EXPLAINABLE_CLASSES

PREFIX = "LiverXAI/"
DEVICES = ("auto", "cuda", "cpu")


def load_settings(settings: Any) -> dict[str, Any]:
    """The remembered device, batch size and explained classes (defaults where unset or bad)."""
    device = str(settings.value(PREFIX + "device", "auto") or "auto")
    try:
        batch_size = int(settings.value(PREFIX + "batchSize", 16))
    except (TypeError, ValueError):
        batch_size = 16
    classes_text = settings.value(PREFIX + "explainClasses", ",".join(EXPLAINABLE_CLASSES))
    classes = [name for name in str(classes_text or "").split(",") if name]
    return {
        "device": device if device in DEVICES else "auto",
        "batchSize": batch_size if 1 <= batch_size <= 256 else 16,
        "explainClasses": [name for name in classes if name in EXPLAINABLE_CLASSES],
    }


def save_settings(settings: Any, device: str, batch_size: int, explain_classes: list[str]) -> None:
    """Remember the device, batch size and explained classes of the last run."""
    settings.setValue(PREFIX + "device", device)
    settings.setValue(PREFIX + "batchSize", int(batch_size))
    settings.setValue(PREFIX + "explainClasses", ",".join(explain_classes))
