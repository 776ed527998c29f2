"""Text forms shared by validation (near duplicates), split (text groups), augmentation (duplicates)
and the HTTP service (what counts as visible), one text at a time; text_columns.py has them column-wise."""

from __future__ import annotations

import functools
import re
import unicodedata

import regex

_SPACE = re.compile(r"\s+")
# What shows nothing, from Unicode's own properties (the `regex` module carries them):
# white space, controls, surrogates and the default-ignorable code points (format
# characters such as zero-width spaces, joiners and bidirectional isolates; the Hangul
# fillers; variation selectors; tag characters).
_INVISIBLE = r"[\p{White_Space}\p{Cc}\p{Cs}\p{Default_Ignorable_Code_Point}]+"


@functools.cache
def visible_pattern(dialect: str = "python") -> str:
    r"""A pattern matching one visible character, in `re` syntax or, with `dialect="braced"`, with
    code points written `\x{h..h}`: the syntax of RE2 and of java.util.regex, which the Great
    Expectations suites run (pandas hands a pattern `re` cannot parse to pyarrow's RE2 kernel,
    30x faster than `re` per text; Spark uses java.util.regex).

    `re` has no Unicode property classes, so the invisible code points are found once with
    `regex` and written out as ranges (about 30).
    """
    if dialect == "braced":  # \x{h..h} where `re` writes \U0000hhhh; the same ranges
        return re.sub(r"\\U0*([0-9a-f]+)", r"\\x{\1}", visible_pattern())
    # Planes 0-3 and 14 hold every such code point (4-13 are unassigned, 15-16 private use).
    runs = [
        (start + m.start(), start + m.end() - 1)
        for start, end in ((0, 0x40000), (0xE0000, 0xF0000))
        for m in regex.finditer(_INVISIBLE, "".join(map(chr, range(start, end))))
    ]
    ranges = "".join(f"\\U{first:08x}" + (f"-\\U{last:08x}" if last > first else "") for first, last in runs)
    return f"[^{ranges}]"


def has_visible_character(text: str) -> bool:
    """Whether a text shows anything (validation's `text_present` rule, and the HTTP service)."""
    return _visible().search(text) is not None


@functools.cache
def _visible() -> re.Pattern[str]:
    return re.compile(visible_pattern())


def normalise(text: str) -> str:
    """The form two texts share when they differ only in case, spacing or Unicode form."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


# A letter of any script, or a pictograph (emoji).
_LETTER_OR_PICTOGRAPH = regex.compile(r"[\p{L}\p{So}]")
# Tokens that are not words, whatever the script: web and mail addresses, hex hashes, and
# ASCII codes that hold a digit and no run of four letters (ids, SKUs, UUIDs, timestamps,
# versions; "112-minute" and "covid19" stay words).
_NON_WORD_TOKENS = (
    ("URLs", re.compile(r"(?i)(?:[a-z][a-z0-9+.-]*://|www\.)\S+")),
    ("e-mail addresses", re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")),
    ("hashes", re.compile(r"(?i)(?=[a-f]*[0-9])(?:0x)?[0-9a-f]{8,}")),
    ("ids or codes", re.compile(r"(?!.*[A-Za-z]{4})[A-Za-z0-9_\-./:#+=]*[0-9][A-Za-z0-9_\-./:#+=]*")),
)


_WRAPPING = "()[]{}<>,;:\"'"


def not_language(text: str) -> str | None:
    """Why `text` is not language (a mapped id, price, timestamp, URL or code), or None when it is.

    Language: at least one token that holds a letter of any script, or a pictograph (emoji
    reviews), and is not an address or an ASCII code with digits. Chinese, Arabic and
    emoji-rich texts pass.
    """
    tokens = text.split()
    if not any(_has_letter_or_symbol(token) for token in tokens):
        return "no letters in any script: only numbers or punctuation"
    for token in tokens:
        if not _has_letter_or_symbol(token):
            continue
        if not any(pattern.fullmatch(token.strip(_WRAPPING)) for _, pattern in _NON_WORD_TOKENS):
            return None
    kinds = {
        next(kind for kind, pattern in _NON_WORD_TOKENS if pattern.fullmatch(token.strip(_WRAPPING)))
        for token in tokens
        if _has_letter_or_symbol(token)
    }
    return f"no words: only numbers and {', '.join(sorted(kinds))}"


def _has_letter_or_symbol(token: str) -> bool:
    return _LETTER_OR_PICTOGRAPH.search(token) is not None
