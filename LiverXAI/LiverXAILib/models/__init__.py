"""Networks, checkpoints, the model catalog, downloads and weight folding."""
