"""Column-wise forms of text.py's normalise, not_language and has_visible_character, over Arrow's string kernels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.lib.data.text import has_visible_character, normalise, not_language

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
