"""Labelling: the review queue into Label Studio, and its finished labels back into the landing folder."""
