"""Stage `split`: seeded train/val/test that stay put as data grows; a source's own splits are kept.

How rows are assigned (by text group, by a hash of the text and the seed) is in
tasks/lib/data/splitting.py; this stage streams the validated rows into the three splits.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from tasks.lib.columns import RAW_COLUMNS, SPLIT, SPLITS
from tasks.lib.config import Params
from tasks.lib.data.batches import ParquetTable
from tasks.lib.data.splitting import split_rows
from tasks.lib.io import TableWriter, atomic_path
from tasks.lib.stage_runner import run_as_script

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Stage entry point: write the three splits, reading the validated rows in batches."""
    table = ParquetTable(params.path("validated"))
    parts = split_rows(
        table, params.split, None if params.task == "sequence_classification" else list(params.data.labels)
    )
    destination = np.full(table.rows, -1, dtype=np.int8)  # rows in no split: left out by max_test_rows
    for index, name in enumerate(SPLITS):
        destination[parts[name]] = index
    with contextlib.ExitStack() as stack:
        writers = [
            stack.enter_context(
                TableWriter(stack.enter_context(atomic_path(params.path(f"{name}_split"))), RAW_COLUMNS)
            )
            for name in SPLITS
        ]
        start = 0
        for batch in table.batches():
            where = destination[start : start + len(batch)]
            for index, name in enumerate(SPLITS):
                writers[index].write(batch[where == index].assign(**{SPLIT: name}))
            start += len(batch)
    log.info(f"split: { {name: len(rows) for name, rows in parts.items()} }")


if __name__ == "__main__":
    run_as_script(run)
