"""Explanations: Grad-CAM, Integrated Gradients, their quality and sanity, and the review list."""
