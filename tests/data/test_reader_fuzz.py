"""The reader on arbitrary bytes: it reads a table or raises the project's DataError, nothing else."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.lib.readers import DataError, read_file

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
