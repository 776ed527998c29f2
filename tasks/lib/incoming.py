"""Accepted batches of new data (`paths.incoming`): their names, their data version, reading them.

`tasks.apps.landing` adds a batch; the ingest stage appends every batch to the
source data. Both hold `incoming_lock`, so a batch is never half-seen.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from filelock import FileLock

from tasks.lib.io import lock_path, read_table

# `b<number>-<content hash>.parquet`: four digits at least, more after batch 9,999.
_BATCH = re.compile(r"b(\d{4,})-[0-9a-f]+\.parquet")


def batch_files(incoming: Path) -> list[Path]:
    """The accepted batches, oldest first (by number, so b10000 follows b9999)."""
    if not incoming.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in incoming.iterdir() if (m := _BATCH.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def batch_id(batch: Path) -> str:
    """`bNNNN`, the batch's number."""
    return batch.stem.split("-")[0]


def data_version(batches: list[Path]) -> str:
    """`NNNN-<hash>`: how many batches were accepted, and a digest of which (their names hold their content hash)."""
    digest = hashlib.sha256("\n".join(p.name for p in batches).encode()).hexdigest()[:12]
    return f"{len(batches):04d}-{digest}"


def read_batches(files: list[Path]) -> pd.DataFrame | None:
    """These batches as one raw table (None: there are none)."""
    return pd.concat([read_table(p) for p in files], ignore_index=True) if files else None


@contextmanager
def incoming_lock(root: Path) -> Iterator[None]:
    """Held while a batch is added, and by the pipeline while its ingest stage reads the batches,
    so a batch is never half-seen: DVC records exactly the folder the stage read."""
    with FileLock(str(lock_path(root, "incoming"))):
        yield
