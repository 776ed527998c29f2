"""The derived columns validation rules look at.

The label after `data.label_map`, token counts, why a text is not language, and for each
row the copy it repeats, the copies it conflicts with, the split it leaks into or why its
label looks wrong (those four from the whole table: tasks.lib.validation.groups and
label_noise). Pandas computes them batch by batch; the Great Expectations suite then
judges them, so every rule appears in the Data Docs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.data.sentences import broken_iob, misaligned, tag_set, unknown_tag
from tasks.lib.data.text_columns import ascii_with_alphanumeric, not_language_column, visible_column

MAPPED_LABEL = "_label"
TOKENS = "_tokens"
CONFLICT = "_conflicting_labels"
LEAK = "_leaks_into"
EXACT_COPY_OF = "_duplicate_of"
NEAR_COPY_OF = "_near_duplicate_of"
NOT_LANGUAGE = "_not_language"
LABEL_ISSUE = "_label_issue"
DERIVED = (MAPPED_LABEL, TOKENS, NOT_LANGUAGE, CONFLICT, LEAK, EXACT_COPY_OF, NEAR_COPY_OF, LABEL_ISSUE)
# Token classification: why a sentence's tags do not pair with its words, the tag outside the
# set, the I-X that continues no X (each a detail or None).
MISALIGNED = "_misaligned_tags"
UNKNOWN_TAG = "_unknown_tag"
BROKEN_IOB = "_broken_iob"
TAG_DERIVED = (MISALIGNED, UNKNOWN_TAG, BROKEN_IOB)
# When one text is in several source splits, the evaluation copy stays: the
# test and validation sets are what runs are compared on.
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}
# Control: C0/C1 controls except tab and newlines, and U+FFFD, which a lossy decoder leaves
# behind. U+FFFD is written as itself: RE2 (pyarrow's regex engine, which pandas runs this on
# in the Great Expectations suite) has no \u escape, and pandas would fall back to `re` per text.
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" + "\ufffd]"


def map_labels(labels: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """Labels renamed by `data.label_map`; labels it does not list stay as read."""
    return labels.map(mapping).fillna(labels) if mapping else labels


class TokenCounter:
    """Tokens per text in `train.base_model`'s tokenizer, special tokens not counted.

    Counted by the Rust tokenizer itself, without truncation or padding (a sentence-transformers
    tokenizer file truncates at 128): the transformers wrapper would first turn every row's
    token ids into a Python list, 1.7x slower on SST-2.

    With `bounds` (validate's min_tokens, max_tokens), `where_needed` counts only the texts
    that could break them, the costliest step of validation otherwise. A WordPiece, BPE or
    Unigram tokenizer gives an ASCII text with a letter or digit at least one token and at most
    one more than its characters (each token covers a character or more; a word-start marker
    may add one), so such a text of at most max_tokens - 1 characters cannot break the bounds
    when min_tokens is at most 1. The first `probe_rows` such texts are counted to check that
    this holds for the configured tokenizer; if any breaks it, every text is counted from then on.
    """

    probe_rows = 10_000

    def __init__(self, base_model: str, root: Path, bounds: tuple[int, int] | None = None):
        import copy

        from transformers import AutoTokenizer

        from tasks.lib.training.models import resolve_base_model

        wrapper = AutoTokenizer.from_pretrained(resolve_base_model(base_model, root))
        self.tokenizer = copy.deepcopy(wrapper.backend_tokenizer)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.bounds = bounds
        self.shortcut: bool | None = None if bounds is not None else False  # None: not checked yet

    def __call__(self, texts: list[str], chunk: int = 10_000) -> np.ndarray:
        counts = np.zeros(len(texts), dtype=np.int64)
        # In chunks: an encoding holds every token's id, string and offsets, a kilobyte or more a row.
        for start in range(0, len(texts), chunk):
            encodings = self.tokenizer.encode_batch(texts[start : start + chunk], add_special_tokens=False)
            counts[start : start + len(encodings)] = [len(encoding) for encoding in encodings]
        return counts

    def where_needed(self, texts: pd.Series) -> np.ndarray:
        """Token counts (floats) of the texts that could break `bounds`; NaN for the others."""
        if self.bounds is None or self.shortcut is False:
            return self(texts.tolist()).astype(float)
        lowest, highest = self.bounds
        lengths = texts.str.len().fillna(0).to_numpy(np.int64)
        safe = ascii_with_alphanumeric(texts) & (lengths + 1 <= highest) & (lowest <= 1)
        if self.shortcut is None:  # not checked yet: check the bound on the first safe texts
            probe = np.flatnonzero(safe)[: self.probe_rows]
            if len(probe):
                counts = self(texts.iloc[probe].tolist())
                self.shortcut = bool(((counts >= 1) & (counts <= lengths[probe] + 1)).all())
            if self.shortcut is False:
                return self(texts.tolist()).astype(float)
        counts = np.full(len(texts), np.nan)
        needed = np.flatnonzero(~safe)
        counts[needed] = self(texts.iloc[needed].tolist())
        return counts


def add_features(
    batch: pd.DataFrame,
    label_map: dict[str, str],
    counter: TokenCounter,
    findings: dict[str, list[str | None]],
    entity_types: list[str] | None = None,
) -> pd.DataFrame:
    """A batch of the raw table with the derived columns the row rules read.

    Args:
        findings: the group and label-noise columns of these rows (a detail or None each),
            which only the whole table can tell (tasks.lib.validation.groups).
        entity_types: token classification's entity types (data.labels): adds TAG_DERIVED.
    """
    frame = batch.reset_index(drop=True).copy()
    frame[MAPPED_LABEL] = map_labels(frame[LABEL], label_map)
    # A text with nothing visible is text_present's finding; judging it again would repeat it.
    visible = visible_column(frame[TEXT])
    frame[TOKENS] = pd.Series(counter.where_needed(frame[TEXT]), index=frame.index, dtype=float).where(visible)
    frame[NOT_LANGUAGE] = pd.Series(not_language_column(frame[TEXT]), index=frame.index, dtype=object).where(visible)
    for name, values in findings.items():
        frame[name] = pd.Series(values, index=frame.index, dtype=object)
    if entity_types is not None:
        tags = tag_set(entity_types)
        pairs = list(zip(frame[TEXT], frame[LABEL], strict=True))
        frame[MISALIGNED] = pd.Series([misaligned(text, label) for text, label in pairs], dtype=object)
        frame[UNKNOWN_TAG] = pd.Series([unknown_tag(label, tags) for _, label in pairs], dtype=object)
        frame[BROKEN_IOB] = pd.Series([broken_iob(label) for _, label in pairs], dtype=object)
    return frame
