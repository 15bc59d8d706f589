"""Names and numbers shared by every part of LiverXAI."""

CLASS_NAMES: tuple[str, ...] = ("background", "liver", "tumor")
LIVER, TUMOR = 1, 2
EXPLAINABLE_CLASSES: tuple[str, ...] = ("liver", "tumor")

# Colours (RGB in [0, 1]) used for the labelmap colour table and the segments.
CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    "background": (0.0, 0.0, 0.0),
    "liver": (0.87, 0.60, 0.47),
    "tumor": (0.95, 0.90, 0.20),
}

DEFAULT_HU_WINDOW: tuple[float, float] = (-200.0, 300.0)
DEFAULT_MODEL = "unet2d-six"
