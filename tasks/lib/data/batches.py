"""Tables read batch by batch: a stage that streams holds one batch of rows, not the table.

A `Table` can be read several times (a stage that needs a fact about every row before it
can judge one reads twice), each time only the columns it asks for. A Parquet file is read
by `iter_batches`, which decodes one batch of rows at a time; a DataFrame already in memory
(a landing file, a test) is one batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, cast

import numpy as np
import pandas as pd

# Rows per batch: about 60 MB of decoded Python strings at SST-2's 60 bytes per text, and large
# enough that per-batch costs (a Great Expectations run, a tokenizer call) stay a small share.
BATCH_ROWS = 200_000
T = TypeVar("T")


class Table(Protocol):
    """Rows that can be read, in order, in batches, as often as needed."""

    @property
    def rows(self) -> int: ...

    def batches(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """The rows in order, in DataFrames indexed from 0 within each batch; only `columns` if given."""
        ...


@dataclass(frozen=True)
class FrameTable:
    """A DataFrame as a table of one batch."""

    frame: pd.DataFrame

    @property
    def rows(self) -> int:
        return len(self.frame)

    def batches(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        frame = self.frame if columns is None else self.frame[columns]
        yield frame.reset_index(drop=True)


@dataclass(frozen=True)
class ParquetTable:
    """A Parquet file read `batch_rows` rows at a time."""

    path: Path
    batch_rows: int = BATCH_ROWS

    @property
    def rows(self) -> int:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(self.path).metadata.num_rows)

    def batches(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        return read_ahead(self._read(columns))

    def _read(self, columns: list[str] | None) -> Iterator[pd.DataFrame]:
        import pyarrow.parquet as pq

        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: missing; run the stage that writes it first (dvc repro)")
        # No pre-buffering: its cache keeps the bytes of every row group read until the file closes,
        # so memory grew with the file where one batch at a time is the aim.
        with pq.ParquetFile(self.path, pre_buffer=False) as parquet:
            for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=columns):
                yield batch.to_pandas()


_END = object()


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items` in order, each next one made by a thread while the caller works on the current one.

    Arrow reads and decodes Parquet without holding Python's lock, so on two cores the reading
    overlaps the caller's work instead of adding to it; one item is held ahead, no more.
    """
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
            pending = pool.submit(next, items, _END)
            while (item := pending.result()) is not _END:
                pending = pool.submit(next, items, _END)
                yield cast(T, item)
    finally:  # a caller that stops early: the pool has finished its read, close the source
        close = getattr(items, "close", None)
        if close is not None:
            close()


def as_table(data: Table | pd.DataFrame) -> Table:
    return FrameTable(data) if isinstance(data, pd.DataFrame) else data


def gather(table: Table, positions: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """The rows at `positions` (sorted, unique row numbers of `table`), indexed by position."""
    found, start = [], 0
    for batch in table.batches(columns):
        end = start + len(batch)
        inside = positions[(positions >= start) & (positions < end)]
        if len(inside):
            found.append(batch.iloc[inside - start].set_axis(inside))
        start = end
    return pd.concat(found) if found else pd.DataFrame(columns=columns, index=pd.Index([], dtype=np.int64))


class Vocabulary:
    """Small integer codes for the values of a column read in batches (labels, splits): a code per
    row costs 4 bytes where a Python string costs 50 or more. Missing values get -1."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._codes: dict[str, int] = {}

    def codes(self, column: pd.Series) -> np.ndarray:
        local = pd.Categorical(column)
        mapping = np.array([self._codes.setdefault(value, len(self._codes)) for value in local.categories], np.int32)
        self.values = list(self._codes)
        return np.where(local.codes < 0, -1, mapping[local.codes] if len(mapping) else -1).astype(np.int32)

    def series(self, codes: np.ndarray) -> pd.Series:
        """Codes back to a (categorical) Series of values."""
        return pd.Series(pd.Categorical.from_codes(codes, categories=self.values))
