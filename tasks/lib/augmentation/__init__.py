"""Augmentation of training rows: synonym swap, back-translation, and the filters that keep variants honest."""
