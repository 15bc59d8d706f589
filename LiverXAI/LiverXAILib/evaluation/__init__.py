"""Evaluation with the source papers' metrics, and leave-one-patient-out cross-validation."""
