"""Text forms shared by validation (near duplicates), split (text groups) and augmentation (duplicates)."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
# Visible: anything but whitespace, control and format characters (zero-width
# spaces, joiners, byte-order marks).
VISIBLE = r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202f\u2060-\u2064\ufeff]"
_VISIBLE = re.compile(VISIBLE)


def has_visible_character(text: str) -> bool:
    """Whether a text shows anything (validation's `text_present` rule, and the HTTP service)."""
    return _VISIBLE.search(text) is not None


def normalise(text: str) -> str:
    """The form two texts share when they differ only in case, spacing or Unicode form."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
