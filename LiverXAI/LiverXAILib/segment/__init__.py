"""Segmentation of a CT array: orientation, preprocessing, inference, clean-up, lesions and
uncertainty."""
