"""Stage `split`: stratified, seeded train/val/test; a source's own splits are kept.

Splits are carved by text group: rows whose texts are equal after
normalisation always land in the same split, so duplicates that validation
was told to keep (`warn`) cannot leak between train and test.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.config import Params, PipelineError, SplitConfig
from tasks.io import LABEL, SPLIT, SPLITS, TEXT, read_table, write_table
from tasks.validate.features import normalise


class SplitError(PipelineError, ValueError):
    """The data cannot be split as configured."""


def _carve(frame: pd.DataFrame, fraction: float, seed: int, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `frame` into (rest, part), `part` about `fraction` of the text groups, stratified by label."""
    keys = frame[TEXT].map(normalise)
    groups = frame.assign(_key=keys).drop_duplicates("_key")  # one row stands for its group
    counts = groups[LABEL].value_counts()
    if (counts < 2).any():
        rare = counts[counts < 2].index.tolist()
        raise SplitError(f"cannot carve a stratified {name} split: labels {rare} have fewer than 2 distinct texts")
    _, part = train_test_split(groups, test_size=fraction, random_state=seed, stratify=groups[LABEL])
    in_part = keys.isin(set(part["_key"]))
    return frame[~in_part], frame[in_part]


def split(frame: pd.DataFrame, config: SplitConfig) -> dict[str, pd.DataFrame]:
    """Return {'train', 'val', 'test'} frames.

    Rows the source already assigned to a split stay there; missing splits are
    carved from the training rows (unsplit rows count as training rows).
    """
    assigned = frame[SPLIT].fillna("train")
    parts = {name: frame[assigned == name] for name in SPLITS}
    train = parts["train"]
    if parts["test"].empty:
        share = config.test_fraction if parts["val"].empty else config.test_fraction / (1 - config.val_fraction)
        train, parts["test"] = _carve(train, share, config.seed, "test")
    if parts["val"].empty:
        share = config.val_fraction / (1 - config.test_fraction)
        train, parts["val"] = _carve(train, share, config.seed + 1, "val")
    if config.max_train_rows is not None and len(train) > config.max_train_rows:
        train, _ = train_test_split(train, train_size=config.max_train_rows, random_state=config.seed,
                                    stratify=train[LABEL])
    parts["train"] = train
    return {name: part.assign(**{SPLIT: name}).reset_index(drop=True) for name, part in parts.items()}


def run(params: Params) -> None:
    """Stage entry point: write the three splits."""
    parts = split(read_table(params.path("validated")), params.split)
    for name, part in parts.items():
        write_table(params.path(f"{name}_split"), part)
    sizes = {name: len(part) for name, part in parts.items()}
    print(f"split: {sizes}")
