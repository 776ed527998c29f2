"""Parquet tables read a batch ahead and written a row group behind, with nothing lost or reordered."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tasks.lib.columns import RAW_COLUMNS
from tasks.lib.data.batches import ParquetTable, read_ahead
from tasks.lib.io import TableWriter, write_batches


def _rows(start: int, count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"text {i}" for i in range(start, start + count)],
            "label": ["a" if i % 3 else "b" for i in range(start, start + count)],
            "split": None,
            "row_id": [f"r{i}" for i in range(start, start + count)],
            "source_file": "f.tsv",
            "source_line": range(start + 2, start + count + 2),
        }
    )


def test_a_table_written_behind_and_read_ahead_comes_back_in_order(tmp_path):
    path = tmp_path / "t.parquet"
    assert write_batches(path, (_rows(i * 7, 7) for i in range(5)), RAW_COLUMNS) == 35
    batches = list(ParquetTable(path, batch_rows=10).batches(["text", "source_line"]))
    assert [len(b) for b in batches] == [10, 10, 10, 5]
    joined = pd.concat(batches, ignore_index=True)
    assert joined["text"].tolist() == [f"text {i}" for i in range(35)]
    assert joined["source_line"].tolist() == list(range(2, 37))


def test_read_ahead_passes_errors_on_and_closes_a_source_left_early():
    closed = []

    def source():
        try:
            yield 1
            yield 2
            raise ValueError("row 3 is broken")
        finally:
            closed.append(True)

    with pytest.raises(ValueError, match="row 3"):
        list(read_ahead(source()))
    items = read_ahead(source())
    assert next(items) == 1
    items.close()
    assert closed == [True, True]


def _write_to_a_full_disk() -> None:
    with TableWriter(Path("/dev/full"), RAW_COLUMNS) as writer:  # every write fails as on a full disk
        for start in range(0, 3000, 1000):
            writer.write(_rows(start, 1000))


def test_a_row_group_the_writer_thread_fails_on_is_raised_not_lost():
    with pytest.raises(OSError, match="No space left"):
        _write_to_a_full_disk()


def test_a_missing_table_names_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing; run the stage"):
        list(ParquetTable(tmp_path / "absent.parquet").batches())
