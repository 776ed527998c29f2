"""Findings about groups of equal texts, from compact per-row keys instead of the texts.

Every row is reduced to a 64-bit hash of its text and of its normalised text, a label code
and a split code (`RowKeys`, about 30 bytes a row), so ten million rows fit in a few hundred
megabytes. Two different texts share a 64-bit hash with a probability of about n^2 / 2^65
over the whole table (3 in a million at ten million rows); such a pair would be reported as
copies, with both rows named in the quarantine file.

Each row gets at most one of the group findings, in this order: conflicting labels (every
copy), split leakage (the lower-priority copies), exact duplicate, normalised duplicate (the
later copies).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.lib.batches import Table, Vocabulary
from tasks.lib.columns import LABEL, SPLIT, TEXT
from tasks.lib.text import normalise, visible_pattern
from tasks.lib.validation.features import SPLIT_PRIORITY, map_labels

NONE = -1  # no finding, no split, no label
UNSPLIT = SPLIT_PRIORITY["train"]  # an unsplit row counts as a training row


def text_hash(texts: pd.Series) -> np.ndarray:
    """A 64-bit hash per text (pandas' SipHash), equal for equal texts in any batch."""
    return pd.util.hash_array(texts.to_numpy(dtype=object), categorize=False)


@dataclass
class RowKeys:
    """What the group rules and the dataset rules need of every row, in row order."""

    exact: np.ndarray  # uint64: hash of the text
    normalised: np.ndarray  # uint64: hash of the normalised text
    label: np.ndarray  # int32: code of the label after data.label_map (labels.values), -1 missing
    split: np.ndarray  # int8: SPLIT_PRIORITY of the source's split, -1 none
    length: np.ndarray  # int32: characters
    visible: np.ndarray  # bool: has a visible character
    labels: Vocabulary = field(default_factory=Vocabulary)

    @property
    def rows(self) -> int:
        return len(self.exact)


def row_keys(table: Table, label_map: dict[str, str]) -> RowKeys:
    """Read `table`'s text, label and split columns batch by batch into RowKeys."""
    labels = Vocabulary()
    parts: dict[str, list[np.ndarray]] = {
        name: [] for name in ("exact", "normalised", "label", "split", "length", "visible")
    }
    visible = visible_pattern()
    for batch in table.batches([TEXT, LABEL, SPLIT]):
        texts = batch[TEXT]
        parts["exact"].append(text_hash(texts))
        parts["normalised"].append(text_hash(texts.map(normalise)))
        parts["label"].append(labels.codes(map_labels(batch[LABEL], label_map)))
        parts["split"].append(batch[SPLIT].map(SPLIT_PRIORITY).fillna(NONE).to_numpy(np.int8))
        parts["length"].append(texts.str.len().to_numpy(np.int32))
        parts["visible"].append(texts.str.contains(visible).fillna(False).to_numpy(bool))
    joined = {
        name: np.concatenate(arrays) if arrays else np.zeros(0, dtype)
        for (name, arrays), dtype in zip(
            parts.items(), (np.uint64, np.uint64, np.int32, np.int8, np.int32, bool), strict=True
        )
    }
    return RowKeys(**joined, labels=labels)


@dataclass
class Conflict:
    """One group of equal normalised texts with more than one label."""

    labels: list[str]
    rows: int
    first: list[int]  # positions of the first rows, for the listing


@dataclass
class GroupFindings:
    """Per row, -1 or: the conflict group it is in, or the position of the copy it leaks into or repeats."""

    conflict: np.ndarray
    leak_into: np.ndarray
    exact_copy_of: np.ndarray
    near_copy_of: np.ndarray
    conflicts: list[Conflict]

    def referenced(self) -> np.ndarray:
        """Positions whose row ids the findings' details name."""
        named = [a[a >= 0] for a in (self.leak_into, self.exact_copy_of, self.near_copy_of)]
        named += [np.array(c.first, dtype=np.int64) for c in self.conflicts]
        return np.unique(np.concatenate(named)) if named else np.zeros(0, np.int64)


LISTED = 3


def _first_copy(keys: pd.Series, positions: np.ndarray) -> np.ndarray:
    """Per row (of `positions`), the position of the first row with the same key."""
    return pd.Series(positions).groupby(keys.to_numpy(), sort=False).transform("first").to_numpy()


def group_findings(keys: RowKeys) -> GroupFindings:
    """Conflicting labels, split leakage and duplicates, by hashed text."""
    n = keys.rows
    positions = np.arange(n, dtype=np.int64)
    normalised = pd.Series(keys.normalised)
    # Conflicts: more than one label in a group (a missing label is label_in_set's finding, not a label).
    label = pd.Series(np.where(keys.label >= 0, keys.label, np.nan))
    label_counts = label.groupby(keys.normalised, sort=False).transform("nunique")
    conflicting = label_counts.to_numpy() > 1
    conflict = np.full(n, NONE, dtype=np.int64)
    conflicts: list[Conflict] = []
    if conflicting.any():
        members = pd.DataFrame({"key": keys.normalised[conflicting], "position": positions[conflicting]})
        for index, (_, group) in enumerate(members.groupby("key", sort=False)):
            rows = group["position"].to_numpy()
            names = sorted({keys.labels.values[code] for code in keys.label[rows] if code >= 0})
            conflicts.append(Conflict(names, len(rows), list(rows[:LISTED])))
            conflict[rows] = index
    free = ~conflicting
    leak_into = np.full(n, NONE, dtype=np.int64)
    if (keys.split >= 0).any():
        # Of a text in several source splits, the evaluation copy stays (test before val before train).
        candidates = positions[free]
        priority = np.where(keys.split[free] < 0, UNSPLIT, keys.split[free])
        group_keys = normalised[free].to_numpy()
        best = pd.Series(priority).groupby(group_keys, sort=False).transform("min").to_numpy()
        leaking = priority > best
        if leaking.any():
            kept = pd.Series(candidates[priority == best]).groupby(group_keys[priority == best], sort=False).first()
            leak_into[candidates[leaking]] = kept.reindex(group_keys[leaking]).to_numpy()
            free[candidates[leaking]] = False
    exact_copy_of = np.full(n, NONE, dtype=np.int64)
    near_copy_of = np.full(n, NONE, dtype=np.int64)
    for target, hashes in ((exact_copy_of, keys.exact), (near_copy_of, keys.normalised)):
        candidates = positions[free]
        first = _first_copy(pd.Series(hashes[free]), candidates)
        repeats = first != candidates
        target[candidates[repeats]] = first[repeats]
        free[candidates[repeats]] = False
    return GroupFindings(conflict, leak_into, exact_copy_of, near_copy_of, conflicts)


def listing(row_ids: list[str], rows: int) -> str:
    shown = ", ".join(row_ids)
    return shown + (f" and {rows - len(row_ids)} more" if rows > len(row_ids) else "")
