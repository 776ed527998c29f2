"""The derived columns validation rules look at.

Normalised text, the label after `data.label_map`, token counts, and for each
row the copy it repeats, the copies it conflicts with, or the split it leaks
into. Pandas computes them (vectorised, by group); the Great Expectations
suite then judges them, so every rule appears in the Data Docs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.lib.columns import LABEL, ROW_ID, SPLIT, TEXT
from tasks.lib.config import LabelNoiseConfig
from tasks.lib.text import normalise, not_language, visible_pattern
from tasks.lib.validation.label_noise import suspected_labels

NORMALISED = "_normalised"
MAPPED_LABEL = "_label"
TOKENS = "_tokens"
CONFLICT = "_conflicting_labels"
LEAK = "_leaks_into"
EXACT_COPY_OF = "_duplicate_of"
NEAR_COPY_OF = "_near_duplicate_of"
NOT_LANGUAGE = "_not_language"
LABEL_ISSUE = "_label_issue"
DERIVED = (NORMALISED, MAPPED_LABEL, TOKENS, NOT_LANGUAGE, CONFLICT, LEAK, EXACT_COPY_OF, NEAR_COPY_OF, LABEL_ISSUE)
# When one text is in several source splits, the evaluation copy stays: the
# test and validation sets are what runs are compared on.
SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}
# Control: C0/C1 controls except tab and newlines, and U+FFFD, which a lossy
# decoder leaves behind.
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]"
MAX_LISTED = 3


def map_labels(labels: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """Labels renamed by `data.label_map`; labels it does not list stay as read."""
    return labels.map(mapping).fillna(labels) if mapping else labels


def token_counts(texts: list[str], base_model: str, root: Path, batch_size: int = 20_000) -> np.ndarray:
    """Tokens per text in `train.base_model`'s tokenizer, special tokens not counted.

    In batches: the token ids of every text at once would cost hundreds of bytes per row.
    """
    from transformers import AutoTokenizer

    from tasks.lib.models import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(base_model, root))
    counts = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(
            texts[start : start + batch_size],
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        counts[start : start + len(ids)] = [len(row) for row in ids]
    return counts


def _listing(row_ids: list[str]) -> str:
    shown = ", ".join(row_ids[:MAX_LISTED])
    return shown + (f" and {len(row_ids) - MAX_LISTED} more" if len(row_ids) > MAX_LISTED else "")


def _conflicts(frame: pd.DataFrame) -> pd.Series:
    """Per row in a group of equal texts with different labels: the labels and rows; else None."""
    groups = frame.groupby(NORMALISED, sort=False)
    conflicting = groups[MAPPED_LABEL].transform("nunique") > 1
    result = pd.Series(None, index=frame.index, dtype=object)
    for _, group in frame[conflicting].groupby(NORMALISED, sort=False):
        labels = sorted(group[MAPPED_LABEL].unique())
        result[group.index] = f"labels {labels} on {len(group)} rows: {_listing(list(group[ROW_ID]))}"
    return result


def _leaks(frame: pd.DataFrame, candidates: pd.Series) -> pd.Series:
    """Per row whose text the source also put in a higher-priority split: that copy; else None."""
    result = pd.Series(None, index=frame.index, dtype=object)
    if frame[SPLIT].isna().all():
        return result  # the split stage carves splits by text group: no leakage possible
    rows = frame[candidates]
    priority = rows[SPLIT].fillna("train").map(SPLIT_PRIORITY)
    best = priority.groupby(rows[NORMALISED], sort=False).transform("min")
    leaking = priority > best
    if not leaking.any():
        return result
    kept_copy = rows[priority == best].drop_duplicates(NORMALISED).set_index(NORMALISED)
    where = "also in " + kept_copy[SPLIT] + " as " + kept_copy[ROW_ID]
    result[leaking[leaking].index] = rows.loc[leaking, NORMALISED].map(where)
    return result


def _later_copies(frame: pd.DataFrame, candidates: pd.Series, key: str) -> pd.Series:
    """Per row that repeats an earlier candidate row with the same `key`: that row's id; else None."""
    rows = frame[candidates]
    first = rows.groupby(key, sort=False)[ROW_ID].transform("first")
    result = pd.Series(None, index=frame.index, dtype=object)
    repeats = first != rows[ROW_ID]
    result[repeats[repeats].index] = first[repeats]
    return result


def add_features(
    frame: pd.DataFrame,
    label_map: dict[str, str],
    tokens: np.ndarray,
    noise: tuple[list[str], LabelNoiseConfig] | None = None,
) -> pd.DataFrame:
    """The raw table with the derived columns the rules read.

    Each row gets at most one of the group findings, in this order: conflicting
    labels (every copy), split leakage (the lower-priority copies), exact
    duplicate, normalised duplicate (the later copies). With `noise` (the label set
    and its settings), the rows with visible text whose label looks wrong get why.
    """
    frame = frame.reset_index(drop=True).copy()
    frame[NORMALISED] = frame[TEXT].map(normalise)
    frame[MAPPED_LABEL] = map_labels(frame[LABEL], label_map)
    # A text with nothing visible is text_present's finding; judging it again would repeat it.
    visible = frame[TEXT].str.contains(visible_pattern())
    frame[TOKENS] = pd.Series(tokens, index=frame.index).where(visible)
    frame[NOT_LANGUAGE] = frame[TEXT].map(not_language).where(visible)
    frame[CONFLICT] = _conflicts(frame)
    free = frame[CONFLICT].isna()
    frame[LEAK] = _leaks(frame, free)
    free &= frame[LEAK].isna()
    frame[EXACT_COPY_OF] = _later_copies(frame, free, TEXT)
    free &= frame[EXACT_COPY_OF].isna()
    frame[NEAR_COPY_OF] = _later_copies(frame, free, NORMALISED)
    frame[LABEL_ISSUE] = None
    if noise is not None:
        classes, config = noise
        learnable = visible.fillna(False).astype(bool)
        frame[LABEL_ISSUE] = suspected_labels(
            frame.loc[learnable, TEXT], frame.loc[learnable, MAPPED_LABEL], classes, config
        )
    return frame
