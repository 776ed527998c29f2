"""Stage `split`: seeded train/val/test that stay put as data grows; a source's own splits are kept.

Splits are carved by text group: rows whose texts are equal after
normalisation always land in the same split, so duplicates that validation
was told to keep (`warn`) cannot leak between train and test.

A group's split depends only on its own text and the seed (a hash of both,
against the split's fraction), not on the other rows. Retraining on appended
data therefore never moves a row the production model trained on into the
test split the gate scores it on, and never moves a test row into training.
The price: class shares per split match the data's only up to sampling noise
(a few rows on hundreds), and a label too rare to reach a split is an error.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tasks.lib.columns import LABEL, SPLIT, SPLITS, TEXT
from tasks.lib.config import Params, SplitConfig
from tasks.lib.errors import PipelineError
from tasks.lib.io import read_table, write_table
from tasks.lib.stage_runner import run_as_script
from tasks.lib.text import normalise


class SplitError(PipelineError, ValueError):
    """The data cannot be split as configured."""


def unit_hash(keys: pd.Series, salt: str) -> np.ndarray:
    """A number in [0, 1) per key, uniform over keys, the same for the same key and salt in any data."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(f"{salt}\0{key}".encode(), digest_size=8).digest(), "big") / 2.0**64
            for key in keys
        ),
        dtype=np.float64,
        count=len(keys),
    )


def _carve(frame: pd.DataFrame, fraction: float, seed: int, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `frame` into (rest, part): each text group is in `part` with probability `fraction`."""
    in_part = unit_hash(frame[TEXT].map(normalise), f"{seed}:{name}") < fraction
    rest, part = frame[~in_part], frame[in_part]
    for side, rows in ((name, part), ("remaining training", rest)):
        missing = sorted(set(frame[LABEL]) - set(rows[LABEL]))
        if missing:
            raise SplitError(
                f"the {side} split has no rows of labels {missing} ({len(frame)} rows to carve "
                f"{fraction:.0%} from): too few of them; add data or change split.seed"
            )
    return rest, part


def cap(part: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """The `rows` rows of `part` whose text groups hash lowest: a uniform sample that changes least as data
    grows (a row kept after rows were appended was kept before). Rows left out go to no other split."""
    order = np.argsort(unit_hash(part[TEXT].map(normalise), f"{seed}:cap"), kind="stable")
    return part.iloc[np.sort(order[:rows])]


def split(frame: pd.DataFrame, config: SplitConfig) -> dict[str, pd.DataFrame]:
    """Return {'train', 'val', 'test'} frames.

    Rows the source already assigned to a split stay there; missing splits are
    carved from the training rows (unsplit rows count as training rows). With
    `max_train_rows` the training split is a stratified sample; with `max_test_rows`
    the test split is capped (`cap`), so evaluation and the gate stay affordable.
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
        train, _ = train_test_split(
            train, train_size=config.max_train_rows, random_state=config.seed, stratify=train[LABEL]
        )
    parts["train"] = train
    if config.max_test_rows is not None and len(parts["test"]) > config.max_test_rows:
        parts["test"] = cap(parts["test"], config.max_test_rows, config.seed)
    return {name: part.assign(**{SPLIT: name}).reset_index(drop=True) for name, part in parts.items()}


def run(params: Params) -> None:
    """Stage entry point: write the three splits."""
    parts = split(read_table(params.path("validated")), params.split)
    for name, part in parts.items():
        write_table(params.path(f"{name}_split"), part)
    sizes = {name: len(part) for name, part in parts.items()}
    print(f"split: {sizes}")


if __name__ == "__main__":
    run_as_script(run)
