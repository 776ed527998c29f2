"""The reader on arbitrary bytes: it reads a table or raises the project's DataError, nothing else."""

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.lib.data import readers
from tasks.lib.data.readers import DataError, read_file

# Random bytes, and bytes that look like the files people send (so the parser gets past the header).
PLAUSIBLE = st.lists(
    st.sampled_from(
        [
            b"text",
            b"label",
            b",",
            b"\t",
            b";",
            b'"',
            b"\n",
            b"\r\n",
            b"\x00",
            b"\xef\xbb\xbf",
            b"\xff\xfe",
            b"\xe9",
            b"{",
            b"}",
            b":",
            b"[",
            b" ",
            b"a",
            b"positive",
            b'{"text": "a", "label": 1}\n',
            b"text,label\n",
            b"text\tlabel\n",
        ]
    ),
    max_size=40,
).map(b"".join)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=400), PLAUSIBLE))
def test_reader_reads_or_raises_data_error(tmp_path: Path, make_params, suffix: str, data: bytes):
    params = make_params({"data": {"labels": ["a", "b"]}})
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        frame = read_file(path, params.data)
    except DataError as error:
        assert str(error).startswith(str(path))  # noqa: PT017 - the message names the file first
    else:
        assert len(frame) > 0 and frame["text"].map(type).eq(str).all()


# Tab-separated text, with what breaks it: other field counts, blank and CRLF/CR lines, a huge field.
TAB_SEPARATED = st.lists(
    st.sampled_from(
        [
            b"text\tlabel\n",
            b"nice film\tpos\n",
            b"bad one\tneg\r\n",
            b"\n",
            b"\r",
            b"\t",
            b"a\tb\tc\n",
            b"only\n",
            b"12\t",
            b"x" * 131_073,  # one past the csv module's field size limit
            b'caf\xc3\xa9 "q" \tpos\n',
            b"sentence\tlabel\n",
        ]
    ),
    max_size=30,
).map(lambda parts: b"text\tlabel\n" + b"".join(parts))


def _tab_separated_by_csv(path: Path, config) -> pd.DataFrame:
    """The csv module's reading of a tab-separated file: what the column-wise path must equal."""
    pieces = readers.decoded_pieces(path, path)
    records = readers._records_delimited(path, readers._text_lines(pieces), "\t", config.columns)
    return pd.concat(list(readers._raw_batches(records, config, path, path.name, None)), ignore_index=True)


def _outcome(read) -> tuple:
    try:
        frame = read()
    except DataError as error:
        return ("error", str(error))
    return ("rows", {column: (str(frame[column].dtype), frame[column].tolist()) for column in frame})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=TAB_SEPARATED, piece_bytes=st.sampled_from([3, 16, 1 << 23]), batch_rows=st.sampled_from([2, 100_000]))
def test_tab_separated_files_read_column_wise_give_the_csv_modules_rows_and_errors(
    tmp_path: Path, make_params, monkeypatch, data: bytes, piece_bytes: int, batch_rows: int
):
    params = make_params({"data": {"labels": ["neg", "pos"]}})
    path = tmp_path / "fuzz.tsv"
    path.write_bytes(data)
    monkeypatch.setattr(readers, "PIECE_BYTES", piece_bytes)
    monkeypatch.setattr(readers, "BATCH_ROWS", batch_rows)
    assert _outcome(lambda: read_file(path, params.data)) == _outcome(lambda: _tab_separated_by_csv(path, params.data))
