"""Slices of the test split (params `evaluate.slices`): which rows each one holds."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from tasks.lib.config import NamedSlice, SliceConfig


def _matcher(rule: NamedSlice) -> re.Pattern[str]:
    if rule.pattern is not None:
        return re.compile(rule.pattern, re.IGNORECASE)
    words = "|".join(re.escape(word) for word in rule.keywords or [])
    return re.compile(rf"\b(?:{words})\b", re.IGNORECASE)


def slice_masks(texts: Sequence[str], config: SliceConfig) -> dict[str, np.ndarray]:
    """Slice name -> boolean row mask, length buckets first, then the named slices in params order."""
    words = np.array([len(text.split()) for text in texts])
    masks = {
        name: (words >= low) & (words <= high if high is not None else True)
        for name, low, high in config.length_buckets()
    }
    for name, rule in config.named.items():
        matcher = _matcher(rule)
        masks[name] = np.array([matcher.search(text) is not None for text in texts], dtype=bool)
    return masks
