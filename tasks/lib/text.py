"""Text forms shared by validation (near duplicates), split (text groups) and augmentation (duplicates)."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The form two texts share when they differ only in case, spacing or Unicode form."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
