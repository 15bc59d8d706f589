"""Training a network: cases, slice cache, sampler, augmentation, losses, the trainer and its
process."""
