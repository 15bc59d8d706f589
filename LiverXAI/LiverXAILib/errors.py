"""Errors that LiverXAI raises, with messages written for the person at the screen."""


class InputError(ValueError):
    """The input volume cannot be segmented (missing, 2D, 4D, vector, empty or constant)."""


class NotHounsfieldError(InputError):
    """The input's values do not look like CT Hounsfield units; run anyway with allowNonHU=True."""


class CheckpointError(RuntimeError):
    """A model checkpoint is missing, corrupt, or built for another architecture."""


class Cancelled(Exception):
    """The user cancelled the run; nothing was added to the scene."""
