"""Accepted batches of new data (`paths.incoming`): their names, their data version, reading them.

`tasks.lib.data.landing` adds a batch; the ingest stage appends every batch to the
source data. Both hold `incoming_lock`, so a batch is never half-seen.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from tasks.lib.io import lock_path, read_json, read_table, write_json

# `b<number>-<content hash>.parquet`: four digits at least, more after batch 9,999.
_BATCH = re.compile(r"b(\d{4,})-[0-9a-f]+\.parquet")
# Many small batches are merged into one (retrain.consolidate_after); this file says which.
LEDGER = "consolidated.json"


def _ledger(incoming: Path) -> dict[str, Any] | None:
    """{"file": the merged batch, "holds": every batch name merged into it, "replaces": older merged files};
    None when there is none, or its merged file is not in place yet (a consolidation cut short)."""
    path = incoming / LEDGER
    if not path.exists():
        return None
    ledger: dict[str, Any] = read_json(path)
    return ledger if (incoming / ledger["file"]).exists() else None


def _numbered(incoming: Path) -> list[tuple[int, Path]]:
    if not incoming.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in incoming.iterdir() if (m := _BATCH.fullmatch(p.name)))


def batch_files(incoming: Path) -> list[Path]:
    """The batches to read, oldest first (by number, so b10000 follows b9999); merged ones only once."""
    ledger = _ledger(incoming)
    skipped = set(ledger["holds"]) | set(ledger["replaces"]) if ledger else set()
    return [p for _, p in _numbered(incoming) if p.name not in skipped]


def accepted_names(incoming: Path) -> list[str]:
    """The name of every batch ever accepted, oldest first, whether merged since or not."""
    ledger = _ledger(incoming)
    held = list(ledger["holds"]) if ledger else []
    return held + [p.name for p in batch_files(incoming) if not ledger or p.name != ledger["file"]]


def next_number(incoming: Path) -> int:
    found = _numbered(incoming)
    return found[-1][0] + 1 if found else 1


def batch_id(batch: Path | str) -> str:
    """`bNNNN`, the batch's number."""
    return Path(batch).stem.split("-")[0]


def data_version(incoming: Path, adding: list[str] | None = None) -> str:
    """`NNNN-<hash>`: how many batches were accepted, and a digest of which (their names hold their content
    hash); merging batches does not change it."""
    names = [*accepted_names(incoming), *(adding or [])]
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    return f"{len(names):04d}-{digest}"


def consolidate(incoming: Path, limit: int | None) -> Path | None:
    """Merge every batch into one when there are more than `limit` (hold incoming_lock); returns the new file.

    Crash-safe: the merged file gets its name only after the ledger names it, and a ledger whose file
    is missing is ignored, so the batches are read exactly once at every moment.
    """
    batches = batch_files(incoming)
    if limit is None or len(batches) <= limit:
        return None
    previous = _ledger(incoming)
    names = accepted_names(incoming)
    number = _numbered(incoming)[-1][0]
    merged = incoming / f"b{number:04d}-{hashlib.sha256(chr(10).join(names).encode()).hexdigest()[:16]}.parquet"
    frame = read_batches(batches)
    assert frame is not None
    staging = incoming / f".{merged.name}.tmp"
    try:
        frame.to_parquet(staging, index=False)
    except BaseException:  # a full disk: a partial merge must not keep it full
        staging.unlink(missing_ok=True)
        raise
    replaces = [*(previous["replaces"] if previous else []), *([previous["file"]] if previous else [])]
    write_json(incoming / LEDGER, {"file": merged.name, "holds": names, "replaces": replaces})
    os.replace(staging, merged)  # from here on the ledger counts, and the merged batches are skipped
    for path in batches:
        path.unlink(missing_ok=True)
    return merged


def read_batches(files: list[Path]) -> pd.DataFrame | None:
    """These batches as one raw table (None: there are none)."""
    return pd.concat([read_table(p) for p in files], ignore_index=True) if files else None


@contextmanager
def incoming_lock(root: Path) -> Iterator[None]:
    """Held while a batch is added, and by the pipeline while its ingest stage reads the batches,
    so a batch is never half-seen: DVC records exactly the folder the stage read."""
    with FileLock(str(lock_path(root, "incoming"))):
        yield
