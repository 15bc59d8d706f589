"""The headless command line (python -m LiverXAILib)."""
