"""The split: seeded train/val/test that stay put as data grows; a source's own splits are kept.

Splits are carved by text group: rows whose texts are equal after
normalisation always land in the same split, so duplicates that validation
was told to keep (`warn`) cannot leak between train and test.

A group's split depends only on its own text and the seed (a hash of both,
against the split's fraction), not on the other rows. Retraining on appended
data therefore never moves a row the production model trained on into the
test split the gate scores it on, and never moves a test row into training.
The price: class shares per split match the data's only up to sampling noise
(a few rows on hundreds), and a label too rare to reach a split is an error.

Token classification splits sentences the same way; there each entity type (not each tag
sequence) must reach every carved split, and `max_train_rows` stratifies by the sentence's
first entity type (or none).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.lib.columns import LABEL, SPLIT, SPLITS, TEXT
from tasks.lib.config import SplitConfig
from tasks.lib.data.batches import FrameTable, Table, Vocabulary
from tasks.lib.data.sentences import entity_types as sentence_types
from tasks.lib.data.text_columns import normalise_column
from tasks.lib.errors import PipelineError


class SplitError(PipelineError, ValueError):
    """The data cannot be split as configured."""


def unit_hash(keys: pd.Series | np.ndarray, salt: str) -> np.ndarray:
    """A number in [0, 1) per key, uniform over keys, the same for the same key and salt in any data.

    The first 8 bytes of BLAKE2b over `salt`, a NUL and the key, as a big-endian integer over 2**64:
    the hasher fed the salt once is copied for each key (the same digest as hashing both together).
    """
    salted = hashlib.blake2b(f"{salt}\0".encode(), digest_size=8)

    def digest(key: str) -> bytes:
        hasher = salted.copy()
        hasher.update(key.encode())
        return hasher.digest()

    return np.frombuffer(b"".join(map(digest, keys)), dtype=">u8") / 2.0**64


@dataclass
class SplitKeys:
    """What the split needs of every row, read batch by batch (about 20 bytes a row)."""

    source: np.ndarray  # int8: index into SPLITS of the source's split; unsplit rows are training rows
    label: np.ndarray  # int32 label codes (labels.values); token classification: the first entity type or O
    labels: Vocabulary
    hashes: dict[str, np.ndarray]  # salt -> unit_hash of the normalised text (only the salts asked for)
    # Token classification: which entity types (type_names) each sentence holds, rows x types.
    types: np.ndarray | None = None
    type_names: list[str] | None = None


def split_keys(table: Table, salts: list[str], entity_types: list[str] | None = None) -> SplitKeys:
    """Read the text, label and split columns of `table`, hashing each normalised text with `salts`
    (into arrays of the table's size, filled batch by batch); with `entity_types` (token
    classification), which of them each sentence holds."""
    n = table.rows
    keys = SplitKeys(np.zeros(n, np.int8), np.zeros(n, np.int32), Vocabulary(), {salt: np.zeros(n) for salt in salts})
    if entity_types is not None:
        keys.types, keys.type_names = np.zeros((n, len(entity_types)), bool), entity_types
    start = 0
    for batch in table.batches([TEXT, LABEL, SPLIT]):
        end = start + len(batch)
        source = pd.Index(SPLITS).get_indexer(batch[SPLIT].fillna("train"))
        if (source < 0).any():  # a row in none of the splits would be lost
            unknown = sorted(set(batch[SPLIT].dropna()) - set(SPLITS))
            raise SplitError(f"split values {unknown} in the validated data: expected {list(SPLITS)} or empty")
        keys.source[start:end] = source
        if keys.types is None or entity_types is None:
            keys.label[start:end] = keys.labels.codes(batch[LABEL])
        else:
            found = [sentence_types(tags.split(" ")) for tags in batch[LABEL]]
            keys.label[start:end] = keys.labels.codes(pd.Series([kinds[0] if kinds else "O" for kinds in found]))
            column = {kind: i for i, kind in enumerate(entity_types)}
            for row, kinds in enumerate(found, start):
                keys.types[row, [column[k] for k in kinds if k in column]] = True
        normalised = normalise_column(batch[TEXT]) if salts else None
        for salt in salts:
            keys.hashes[salt][start:end] = unit_hash(normalised, salt)
        start = end
    return keys


def _salts(present: set[str], config: SplitConfig) -> list[str]:
    """The hashes the split will need, given the source splits `present`."""
    salts = [] if "test" in present else [f"{config.seed}:test"]
    salts += [] if "val" in present else [f"{config.seed + 1}:val"]
    return salts + ([f"{config.seed}:cap"] if config.max_test_rows is not None else [])


def _carve(keys: SplitKeys, rows: np.ndarray, fraction: float, salt: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Split `rows` (positions) into (rest, part): each text group is in `part` with probability `fraction`."""
    in_part = keys.hashes[salt][rows] < fraction
    rest, part = rows[~in_part], rows[in_part]
    for side, chosen in ((name, part), ("remaining training", rest)):
        if keys.types is None or keys.type_names is None:
            present = set(keys.label[rows])
            missing = sorted(keys.labels.values[code] for code in present - set(keys.label[chosen]))
            what = "rows of labels"
        else:  # every entity type in both parts, whatever the sentences' tag sequences
            lacking = keys.types[rows].any(axis=0) & ~keys.types[chosen].any(axis=0)
            missing = [keys.type_names[i] for i in np.flatnonzero(lacking)]
            what = "sentences with entities of types"
        if missing:
            raise SplitError(
                f"the {side} split has no {what} {missing} ({len(rows)} rows to carve "
                f"{fraction:.0%} from): too few of them; add data or change split.seed"
            )
    return rest, part


def assign(keys: SplitKeys, config: SplitConfig) -> dict[str, np.ndarray]:
    """{'train', 'val', 'test'}: the positions of each split's rows, in the order they were read.

    Rows the source already assigned to a split stay there; missing splits are carved from the
    training rows (unsplit rows count as training rows). With `max_train_rows` the training split
    is a stratified sample; with `max_test_rows` the test split is capped to the rows whose text
    groups hash lowest (a uniform sample that changes least as data grows: a row kept after rows
    were appended was kept before; rows left out go to no other split).
    """
    parts = {name: np.flatnonzero(keys.source == index) for index, name in enumerate(SPLITS)}
    train = parts["train"]
    if not len(parts["test"]):
        share = config.test_fraction if not len(parts["val"]) else config.test_fraction / (1 - config.val_fraction)
        train, parts["test"] = _carve(keys, train, share, f"{config.seed}:test", "test")
    if not len(parts["val"]):
        share = config.val_fraction / (1 - config.test_fraction)
        train, parts["val"] = _carve(keys, train, share, f"{config.seed + 1}:val", "val")
    if config.max_train_rows is not None and len(train) > config.max_train_rows:
        train, _ = train_test_split(
            train, train_size=config.max_train_rows, random_state=config.seed, stratify=keys.label[train]
        )
        train = np.sort(train)
    parts["train"] = train
    test = parts["test"]
    if config.max_test_rows is not None and len(test) > config.max_test_rows:
        order = np.argsort(keys.hashes[f"{config.seed}:cap"][test], kind="stable")
        parts["test"] = np.sort(test[order[: config.max_test_rows]])
    return parts


def split_rows(table: Table, config: SplitConfig, entity_types: list[str] | None = None) -> dict[str, np.ndarray]:
    """`assign` on `table`, hashing only what the splits the source lacks need."""
    present: set[str] = set()
    for batch in table.batches([SPLIT]):
        present |= set(batch[SPLIT].fillna("train").unique())
    return assign(split_keys(table, _salts(present, config), entity_types), config)


def split(frame: pd.DataFrame, config: SplitConfig, entity_types: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Return {'train', 'val', 'test'} frames of an in-memory table (`assign`); `entity_types`: of
    token classification (data.labels)."""
    table = FrameTable(frame)
    parts = split_rows(table, config, entity_types)
    return {name: frame.iloc[rows].assign(**{SPLIT: name}).reset_index(drop=True) for name, rows in parts.items()}
