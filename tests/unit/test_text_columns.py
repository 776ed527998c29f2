"""The column-wise text functions agree with the per-text ones they speed up."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from tasks.lib.data.text import has_visible_character, normalise, not_language
from tasks.lib.data.text_columns import normalise_column, not_language_column, visible_column
from tests.support.repo import SST2

EDGES = [
    "",
    " ",
    "\t\x0b\x0c\x1c\x1d\x1e\x1f",
    "  Two  Spaces\tand\ttabs \n",
    "\x0bvertical\x0btab\x1cseparators\x1f",
    "UPPER lower MiXeD",
    "see https://example.com/a?b=1",
    "WWW.Example.com",
    "mail me@example.org",
    "deadbeef01 cafe1234",
    "SKU-1234-XY 2024-01-01",
    "covid19 and 112-minute",
    "(word)",
    "12345",
    "$9.99",
    "and/or",
    "ratio: 3:1",
    "naïve café",
    "\uff26\uff55\uff4c\uff4c width",
    "Straße",
    "\u200b\u200b",
    "emoji 👍",
    "control\x07bell",
    "x",
]


def _random_texts(count: int, seed: int = 0) -> list[str]:
    """Seeded random strings over ASCII letters, digits, punctuation and every ASCII white space, some non-ASCII."""
    rng = random.Random(seed)
    alphabet = "abcXYZw.019@:/-_#+=()[]{},;\"'!? \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x00\x7f"
    extra = "éÉßİ\u00a0\u2003\u200b👍\uff26"
    texts = []
    for _ in range(count):
        length = rng.randint(0, 24)
        pool = alphabet + (extra if rng.random() < 0.2 else "")
        texts.append("".join(rng.choice(pool) for _ in range(length)))
    texts += ["www." + t for t in texts[:200]]
    return texts


@pytest.mark.parametrize("dtype", ["str", object])  # Arrow-backed (read from Parquet) or Python objects
@pytest.mark.parametrize("source", ["edges", "random", "sst2"])
def test_column_forms_equal_the_per_text_functions(source, dtype):
    if source == "edges":
        texts = EDGES
    elif source == "random":
        texts = _random_texts(20_000)
    else:
        texts = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, dtype=str, keep_default_na=False)[
            "sentence"
        ].tolist()
    # An index that does not start at 0, as a batch's slice of a frame has.
    series = pd.Series(texts, dtype=dtype, index=range(7, 7 + len(texts)))
    assert list(normalise_column(series)) == [normalise(t) for t in texts]
    assert list(not_language_column(series)) == [not_language(t) for t in texts]
    assert np.array_equal(visible_column(series), [has_visible_character(t) for t in texts])
