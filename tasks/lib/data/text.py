"""Text forms shared by validation (near duplicates), split (text groups) and augmentation (duplicates)."""

from __future__ import annotations

import functools
import re
import unicodedata

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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


# Column-wise forms of normalise, not_language and has_visible_character. Most texts are
# pure ASCII, where the Unicode steps do nothing (NFKC leaves ASCII as it is, casefold is
# lower): Arrow's string kernels judge those a batch at a time, and the others go through the
# functions above one by one. The results are the same (tests/unit/test_text_columns.py
# compares them on SST-2 and on random text); benchmarks/scale.py measures the stages.
# What `\s` and str.split() take for white space in ASCII, as an RE2 class body (RE2's own `\s`
# leaves out \x0b and \x1c-\x1f); the space itself apart.
_ASCII_SPACE_BUT_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f"
_ASCII_SPACE = _ASCII_SPACE_BUT_SPACE + " "
# An ASCII text holding a token like this one is language: a letter, and no digit, @, : or /
# (so it is no URL, address, hash or code, whatever wraps it), unless it holds `www.`.
_ASCII_WORD = f"(?:^|[{_ASCII_SPACE}])[^{_ASCII_SPACE}0-9@:/]*[A-Za-z][^{_ASCII_SPACE}0-9@:/]*(?:[{_ASCII_SPACE}]|$)"


def _ascii(texts: pd.Series) -> tuple[pa.Array, np.ndarray]:
    """The texts as an Arrow array (pandas' own when it holds them in Arrow: no copy), and which of
    them are pure ASCII."""
    array = pa.array(texts, from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type != pa.large_string():
        array = array.cast(pa.large_string())
    return array, _numpy(pc.fill_null(pc.string_is_ascii(array), False))


def _values(texts: pd.Series, positions: np.ndarray) -> np.ndarray:
    """The texts at `positions` as Python objects (the few the Arrow kernels cannot judge)."""
    return texts.iloc[positions].to_numpy(dtype=object)


def _numpy(array: pa.Array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def _matches(array: pa.Array, pattern: str) -> np.ndarray:
    """Per text, whether RE2 `pattern` matches somewhere in it (a missing text: no)."""
    return _numpy(pc.fill_null(pc.match_substring_regex(array, pattern), False))


def normalise_column(texts: pd.Series) -> np.ndarray:
    """`normalise` of every text (an object array)."""
    array, ascii_ = _ascii(texts)
    out = np.empty(len(texts), dtype=object)
    plain = array.filter(ascii_)
    forms = _numpy(pc.ascii_lower(plain))
    # Only texts with a space run, a space at either end or another white-space character need more.
    odd = _matches(plain, f"[{_ASCII_SPACE_BUT_SPACE}]|  |^ | $")
    if odd.any():
        collapsed = pc.replace_substring_regex(pa.array(forms[odd], pa.large_string()), f"[{_ASCII_SPACE}]+", " ")
        forms[odd] = _numpy(pc.utf8_trim(collapsed, " "))
    out[ascii_] = forms
    rest = np.flatnonzero(~ascii_)
    out[rest] = [normalise(text) for text in _values(texts, rest)]
    return out


def not_language_column(texts: pd.Series) -> np.ndarray:
    """`not_language` of every text (an object array, None where it is language)."""
    array, ascii_ = _ascii(texts)
    web = _numpy(pc.fill_null(pc.match_substring(array, "www.", ignore_case=True), False))
    sure = ascii_ & _matches(array, _ASCII_WORD) & ~web
    out = np.full(len(texts), None, dtype=object)
    rest = np.flatnonzero(~sure)
    out[rest] = [not_language(text) for text in _values(texts, rest)]
    return out


def visible_column(texts: pd.Series) -> np.ndarray:
    """`has_visible_character` of every text (a bool array; a missing text shows nothing)."""
    array, ascii_ = _ascii(texts)
    out = ascii_ & _matches(array, "[!-~]")
    rest = np.flatnonzero(~ascii_)
    out[rest] = [isinstance(text, str) and has_visible_character(text) for text in _values(texts, rest)]
    return out


def ascii_with_alphanumeric(texts: pd.Series) -> np.ndarray:
    """Per text, whether it is pure ASCII and holds a letter or digit (a bool array)."""
    array, ascii_ = _ascii(texts)
    return ascii_ & _matches(array, "[A-Za-z0-9]")
