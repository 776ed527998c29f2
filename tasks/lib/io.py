"""Datasets on disk and atomic writes.

A killed stage must leave the last good output, never half a file: every
writer here builds its result beside the target and renames it into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.lib.columns import DISTINCT_COLUMNS

# pandas only where tables are read or written: a serving host has none (docs/getting-started.md#install).
if TYPE_CHECKING:
    import pandas as pd


def current_umask() -> int:
    """The process umask, read without changing it (os.umask sets it, which races with other threads)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
        return umask


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a crash after it keeps the new name)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary file path that replaces `target` only if the block succeeds.

    The file gets the mode a plain `open` would give it (0666 less the umask, not
    mkstemp's 0600, so a server under another account can read a pointer), and
    is synced to disk, then renamed, then its folder synced: after a crash the
    target is the old file or the whole new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~current_umask())
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty folder that replaces the folder `target` only if the block succeeds.

    The swap is two renames (old aside, new in); a crash between them leaves
    the old folder beside the target as `.<name>.old`, never a half-written one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would outlive the rename
    try:
        yield staging
        old = target.parent / f".{target.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def lock_path(root: Path, name: str) -> Path:
    """Where a workspace lock file lives (beside DVC's own, untracked); its folder exists."""
    folder = root / ".dvc" / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.lock"


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


class TableWriter:
    """Writes DataFrames to one Parquet file, a row group per `write`, with a fixed schema.

    A thread encodes and writes each row group while the caller makes the next one (Arrow
    does it without Python's lock); an error in it is raised by the next `write` or on exit.

    Args:
        columns: name -> Arrow type name (`string`, `int64`), the file's schema: a batch whose
            column is all null (a source without splits) is written with the same types as any other.
    """

    def __init__(self, path: Path, columns: dict[str, str]):
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow as pa
        import pyarrow.parquet as pq

        self.columns = list(columns)
        self.schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in columns.items()])
        # No dictionary for columns of distinct values: pyarrow would build one per page and drop it.
        dictionary = [name for name in columns if name not in DISTINCT_COLUMNS]
        self.writer = pq.ParquetWriter(path, self.schema, use_dictionary=dictionary)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self.pending: Future[None] | None = None
        self.rows = 0

    def write(self, batch: pd.DataFrame) -> None:
        import pyarrow as pa

        table = pa.Table.from_pandas(batch[self.columns], schema=self.schema, preserve_index=False)
        self._finish_pending()
        self.pending = self.pool.submit(self.writer.write_table, table)
        self.rows += len(batch)

    def _finish_pending(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._finish_pending()
        finally:
            self.pool.shutdown()
            self.writer.close()


def write_batches(path: Path, batches: Iterable[pd.DataFrame], columns: dict[str, str]) -> int:
    """Write `batches` as one Parquet file (a row group per batch, TableWriter), atomically; returns the rows."""
    with atomic_path(path) as tmp, TableWriter(tmp, columns) as writer:
        for batch in batches:
            writer.write(batch)
    return writer.rows


def read_table(path: Path) -> pd.DataFrame:
    """Read a dataset written by `write_table`; names the stage to run if it is missing."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the stage that writes it first (dvc repro)")
    import pandas as pd

    return pd.read_parquet(path)


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC records for it in dvc.lock."""
    return file_digest(path, "md5")


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file's bytes (hashlib algorithm name), read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def is_url(location: str | Path) -> bool:
    """Whether `location` names a remote store (`scheme://...`) rather than a local folder."""
    return "://" in str(location) and not str(location).startswith("file://")
