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

from tasks.lib.columns import LABEL, SPLIT, TEXT
from tasks.lib.data.batches import Table, Vocabulary
from tasks.lib.data.text_columns import normalise_column, visible_column
from tasks.lib.validation.features import SPLIT_PRIORITY, map_labels

NONE = -1  # no finding, no split, no label
UNSPLIT = SPLIT_PRIORITY["train"]  # an unsplit row counts as a training row
LISTED = 3  # rows a conflict's detail names


def text_hash(texts: pd.Series | np.ndarray) -> np.ndarray:
    """A 64-bit hash per text (pandas' SipHash), equal for equal texts in any batch."""
    return pd.util.hash_array(np.asarray(texts, dtype=object), categorize=False)


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
        return len(self.length)

    def drop_hashes(self) -> None:
        """Free the hashes once the group findings are made (16 bytes a row)."""
        self.exact = self.normalised = np.zeros(0, np.uint64)


def row_keys(table: Table, label_map: dict[str, str]) -> RowKeys:
    """Read `table`'s text, label and split columns batch by batch into RowKeys (filled in place:
    collecting per-batch arrays and joining them would hold the keys twice)."""
    n = table.rows
    keys = RowKeys(
        exact=np.zeros(n, np.uint64),
        normalised=np.zeros(n, np.uint64),
        label=np.zeros(n, np.int32),
        split=np.zeros(n, np.int8),
        length=np.zeros(n, np.int32),
        visible=np.zeros(n, bool),
    )
    start = 0
    for batch in table.batches([TEXT, LABEL, SPLIT]):
        texts, end = batch[TEXT], start + len(batch)
        keys.exact[start:end] = text_hash(texts)
        keys.normalised[start:end] = text_hash(normalise_column(texts))
        keys.label[start:end] = keys.labels.codes(map_labels(batch[LABEL], label_map))
        keys.split[start:end] = batch[SPLIT].map(SPLIT_PRIORITY).fillna(NONE).to_numpy(np.int8)
        keys.length[start:end] = texts.str.len().to_numpy(np.int32)
        keys.visible[start:end] = visible_column(texts)
        start = end
    return keys


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
        return np.unique(np.concatenate(named))


def _repeated(hashes: np.ndarray) -> np.ndarray:
    """Per row, whether another row has the same hash (by sorting: about 17 bytes a row, no hash table)."""
    order = np.argsort(hashes, kind="stable")
    same = hashes[order[1:]] == hashes[order[:-1]]
    repeated = np.zeros(len(hashes), dtype=bool)
    repeated[order[1:][same]] = True
    repeated[order[:-1][same]] = True
    return repeated


def _per_group(keys: np.ndarray, values: np.ndarray, how: str) -> np.ndarray:
    """Per row, `how` ("first", "min", "nunique") of `values` over the rows with the same key."""
    return pd.Series(values).groupby(keys, sort=False).transform(how).to_numpy()


def group_findings(keys: RowKeys) -> GroupFindings:
    """Conflicting labels, split leakage and duplicates, by hashed text.

    Only rows whose normalised text another row shares can have a finding (equal texts are
    equal once normalised), so the groups are formed among those rows only: on data without
    repeats that is almost none, whatever the size of the table.
    """
    n = keys.rows
    found = {name: np.full(n, NONE, dtype=np.int32) for name in ("conflict", "leak", "exact", "near")}
    rows = np.flatnonzero(_repeated(keys.normalised))  # positions; below, arrays are indexed like `rows`
    normalised, labels = keys.normalised[rows], keys.label[rows]
    # Conflicts: more than one label in a group (a missing label is label_in_set's finding, not a label).
    conflicting = _per_group(normalised, np.where(labels >= 0, labels, np.nan), "nunique") > 1
    conflicts: list[Conflict] = []
    if conflicting.any():
        members = pd.DataFrame({"key": normalised[conflicting], "position": rows[conflicting]})
        for index, (_, group) in enumerate(members.groupby("key", sort=False)):
            positions = group["position"].to_numpy()
            names = sorted({keys.labels.values[code] for code in keys.label[positions] if code >= 0})
            conflicts.append(Conflict(names, len(positions), list(positions[:LISTED])))
            found["conflict"][positions] = index
    free = ~conflicting
    split = keys.split[rows]
    if (split >= 0).any():
        # Of a text in several source splits, the evaluation copy stays (test before val before train).
        candidates = np.flatnonzero(free)
        priority = np.where(split[candidates] < 0, UNSPLIT, split[candidates])
        group_keys = normalised[candidates]
        best = priority == _per_group(group_keys, priority, "min")
        leaking = ~best
        if leaking.any():
            kept = pd.Series(rows[candidates[best]]).groupby(group_keys[best], sort=False).first()
            found["leak"][rows[candidates[leaking]]] = kept.reindex(group_keys[leaking]).to_numpy()
            free[candidates[leaking]] = False
    for name, hashes in (("exact", keys.exact[rows]), ("near", normalised)):
        candidates = np.flatnonzero(free)
        first = _per_group(hashes[candidates], rows[candidates], "first")
        repeats = first != rows[candidates]
        found[name][rows[candidates[repeats]]] = first[repeats]
        free[candidates[repeats]] = False
    return GroupFindings(found["conflict"], found["leak"], found["exact"], found["near"], conflicts)


def listing(row_ids: list[str], rows: int) -> str:
    shown = ", ".join(row_ids)
    return shown + (f" and {rows - len(row_ids)} more" if rows > len(row_ids) else "")
