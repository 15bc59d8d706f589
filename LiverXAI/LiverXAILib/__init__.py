"""LiverXAI core library: networks, preprocessing, inference, explanation, post-processing
and the MRML scene bridge. Importable without Slicer; ``python -m LiverXAILib`` runs it."""

__version__ = "0.1.0"
