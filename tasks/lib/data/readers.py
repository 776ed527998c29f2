"""Labelled text read into the raw schema: the configured source, a landed file, a folder.

Sources: `demo` (tasks.lib.data.demo_data), a local file or folder (CSV, TSV, TXT,
JSONL, Parquet, XLSX; any of them compressed with gzip, bzip2, xz or zstd, or
inside a `.zip`), or `hf:<dataset id>` (needs network). Every row keeps the file
(for an archive, `archive.zip/member`) and line it came from, so later stages can
point a person at it; a file that cannot be read stops with its file, line and
(where it applies) column, field, or sheet and cell.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import datetime as dt
import difflib
import gzip
import io
import itertools
import json
import lzma
import math
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.lib.columns import LABEL, ROW_ID, SOURCE_FILE, SOURCE_LINE, SPLIT, TEXT
from tasks.lib.config import DataConfig, Task
from tasks.lib.data.demo_data import generate_reviews
from tasks.lib.data.demo_sentences import TYPES as DEMO_TYPES
from tasks.lib.data.demo_sentences import generate_sentences
from tasks.lib.data.sentences import Sentence, conll_sentences, iob1_to_iob2, jsonl_sentence
from tasks.lib.data.text import not_language
from tasks.lib.errors import DataError

# Formats by suffix, with the delimiter of the delimited ones (`.txt`: sniffed, or data.sep).
SUFFIXES = {
    ".csv": ",",
    ".tsv": "\t",
    ".txt": None,
    ".jsonl": None,
    ".json": None,
    ".parquet": None,
    ".xlsx": None,
    ".conll": None,  # token classification
}
# Compression around any format (`reviews.csv.gz`), and archives of such files.
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
ARCHIVE = ".zip"
# File stems that name a split, so a folder's own split is kept.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "dev": "val",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


# UTF-32 first: its little-endian mark starts with UTF-16's.
FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
# Characters that mean the file is not one clean UTF-8 text file.
FORBIDDEN_CHARACTERS = (
    ("\x00", "NUL character: binary data, or UTF-16 saved without a byte-order mark"),
    ("\ufeff", "byte-order mark inside the file: were files concatenated?"),
)
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
# Rows per batch a reader yields: the stages write and check data batch by batch, so memory
# does not grow with the file.
BATCH_ROWS = 100_000
# A line and its ending (\r\n, \r or \n, kept), as a file opened with newline="" reads them.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def _lines(text: str) -> Iterator[str]:
    """The lines of `text` one at a time (io.StringIO would hold a copy at 4 bytes per character)."""
    return (match.group(0) for match in _LINE.finditer(text))


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


# Lines of a `.txt` file its delimiter is guessed from.
SNIFFED_LINES = 200
# Bytes decoded at a time: a file is read in pieces that end at a line break, so a 10 GB file
# needs no more memory than a small one.
PIECE_BYTES = 1 << 23


def decoded_pieces(content: Path | bytes, path: Path) -> Iterator[str]:
    """The UTF-8 text of a file (or of bytes already read from `path`), in pieces of whole lines;
    a leading UTF-8 byte-order mark is dropped.

    Each piece but the last ends with a newline: a newline byte never falls inside a UTF-8
    sequence, so each piece decodes on its own and errors can name their line.

    Raises:
        DataError: empty file, UTF-16/32, bytes that are not UTF-8, NUL characters,
            a byte-order mark mid-file; with the line and column of the first one.
    """
    chunks = _byte_chunks(content, path)
    head = b""
    for chunk in chunks:  # the start of the file, up to its first visible byte
        head += chunk
        if not _blank(head):
            break
    for bom, encoding in FOREIGN_BOMS:
        if head.startswith(bom):
            raise DataError(
                path, f"{encoding} byte-order mark: the file is {encoding}-encoded; save it as UTF-8", line=1, column=1
            )
    if _blank(head):
        raise DataError(path, "empty file: expected a header row or records")
    head = head.removeprefix(codecs.BOM_UTF8)
    lines_before, carry = 0, b""
    for chunk in itertools.chain([head], chunks):
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        if not cut:
            carry = data
            continue
        piece, carry = data[:cut], data[cut:]
        yield _decode_piece(piece, path, lines_before)
        lines_before += piece.count(b"\n")
    if carry:
        yield _decode_piece(carry, path, lines_before)


def _blank(data: bytes) -> bool:
    """Whether `data` holds nothing but a UTF-8 byte-order mark and whitespace."""
    data = data.removeprefix(codecs.BOM_UTF8)
    return not data or data.isspace()  # not data.strip(): that copies


def _byte_chunks(content: Path | bytes, path: Path) -> Iterator[bytes]:
    """`content` (a file, or bytes already read) in chunks of PIECE_BYTES."""
    if isinstance(content, bytes):
        yield from (content[i : i + PIECE_BYTES] for i in range(0, len(content), PIECE_BYTES))
        return
    try:
        with content.open("rb") as stream:
            while chunk := stream.read(PIECE_BYTES):
                yield chunk
    except OSError as exc:
        raise DataError(path, f"cannot read the file: {exc.strerror}") from None


def _decode_piece(data: bytes, path: Path, lines_before: int) -> str:
    """`data` (whole lines of `path`, after `lines_before` lines) as text, or the DataError of its first problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", errors="replace")
        line, column = _position(before + "?", len(before))
        raise DataError(
            path,
            f"not UTF-8: byte 0x{data[exc.start]:02X} cannot be decoded ({exc.reason}); re-save the file as UTF-8",
            line=lines_before + line,
            column=column,
        ) from None
    for character, problem in FORBIDDEN_CHARACTERS:
        offset = text.find(character)
        if offset >= 0:
            line, column = _position(text, offset)
            raise DataError(path, problem, line=lines_before + line, column=column)
    return text


def _text_lines(pieces: Iterable[str]) -> Iterator[str]:
    """The lines of decoded pieces, each with its ending (`_lines` of their concatenation)."""
    for piece in pieces:
        yield from _lines(piece)


def _pick_column(columns: list[str], candidates: list[str], file: Path, role: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    lowered = {str(c).strip().lower(): c for c in columns}
    close = [
        lowered[m]
        for name in candidates
        for m in difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    ]
    hint = f"; did you mean {close[0]!r}? (set data.{role}_column)" if close else f" (set data.{role}_column)"
    raise DataError(file, f"no {role} column: looked for {candidates}, the file has {columns}{hint}", line=1)


def _check_header(path: Path, header: list[str], delimiter: str) -> None:
    """A one-column header that holds another delimiter means the file uses that one."""
    if not header:
        raise DataError(path, "blank first line: expected a header row", line=1)
    if len(header) == 1:
        for other, name in DELIMITER_NAMES.items():
            if other != delimiter and other in header[0]:
                raise DataError(
                    path,
                    f"the header is one column {header[0]!r}: the file looks {name}-separated, "
                    f"but {path.suffix} files are read as {DELIMITER_NAMES[delimiter]}-separated",
                    line=1,
                )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(path, f"the header names {repeated} more than once", line=1)


def _ragged(path: Path, header: list[str], fields: list[str], line: int) -> DataError:
    """The error for a row whose field count differs from the header's."""
    if len(fields) < len(header):
        missing = header[len(fields)]
        return DataError(
            path,
            f"{len(fields)} fields where the header has {len(header)}: no value for '{missing}'",
            line=line,
            field=missing,
        )
    extra = fields[len(header)]
    return DataError(
        path,
        f"{len(fields)} fields where the header has {len(header)}: unexpected value "
        f"{extra[:40]!r} in column {len(header) + 1} (a stray delimiter in the text?)",
        line=line,
        field=header[-1],
    )


def sniff_delimiter(path: Path, first_lines: list[str], columns: list[str] | None) -> str:
    """The delimiter of a `.txt` file: the one of tab, comma, semicolon and pipe that splits every
    one of its first lines (SNIFFED_LINES) into the same number of fields (that of `columns` when given).

    Raises:
        DataError: none fits, or several do (the message lists them and names data.sep).
    """
    lines = [line.rstrip("\r\n") for line in first_lines[:SNIFFED_LINES] if line.strip()]
    wanted = {len(columns)} if columns else None  # fields per line
    fits = []
    for delimiter in DELIMITER_NAMES:
        counts = {line.count(delimiter) + 1 for line in lines}
        if len(counts) == 1 and (counts == wanted if wanted else counts != {1}):
            fits.append(delimiter)
    if len(fits) == 1:
        return fits[0]
    choices = ", ".join(f"{DELIMITER_NAMES[d]} ({d!r})" for d in DELIMITER_NAMES)
    if not fits:
        shape = f"into the {len(columns)} fields of data.columns" if columns else "into the same number of fields"
        raise DataError(path, f"no delimiter among {choices} splits every line {shape}; set data.sep", line=1)
    names = " and ".join(DELIMITER_NAMES[d] for d in fits)
    raise DataError(
        path,
        f"ambiguous delimiter: {names} {'both' if len(fits) == 2 else 'all'} split every line evenly; "
        "choose one with data.sep "
        f"(one of {', '.join(repr(d) for d in fits)})",
        line=1,
    )


def _records_delimited(
    path: Path, lines: Iterable[str], delimiter: str, columns: list[str] | None = None, lines_before: int = 0
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number where the row starts, row) from the lines of delimited text, with a header
    row unless `columns` names the fields; `lines_before`: lines of the file before these."""
    # TSV is read without quote handling: SST-2 and most TSV exports use quotes
    # as ordinary characters. CSV follows RFC 4180 quoting (fields may span lines).
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
    line = lines_before
    try:
        if columns is None:
            header = next(reader, [])
            _check_header(path, header, delimiter)
            line = lines_before + reader.line_num
        else:
            header = list(columns)
        for fields in reader:
            if not fields:  # a blank line carries no row
                line = lines_before + reader.line_num
                continue
            if len(fields) != len(header):
                raise _ragged(path, header, fields, line + 1)
            yield line + 1, dict(zip(header, fields, strict=True))
            line = lines_before + reader.line_num
    except csv.Error as exc:
        problem = (
            "a quoted field that starts in this row is never closed"
            if "end of data" in str(exc)
            else f"malformed {DELIMITER_NAMES[delimiter]}-separated row: {exc}"
        )
        raise DataError(path, problem, line=line + 1) from None


@dataclass
class _Rows:
    """Rows of a delimited file, column-wise: the line each starts on, and its fields in header order."""

    lines: np.ndarray  # int64
    header: list[str]
    fields: pa.ListArray  # one list of len(header) strings per row

    def records(self, limit: int) -> list[dict[str, str]]:
        """The first `limit` rows as {column: value}."""
        return [dict(zip(self.header, row, strict=True)) for row in self.fields.slice(0, limit).to_pylist()]

    def column(self, name: str) -> pa.Array:
        return pc.list_element(self.fields, self.header.index(name))


# Lines end as _LINE ends them.
_LINE_END = r"\r\n|\r|\n"


def _rows_tab_separated(path: Path, pieces: Iterable[str], columns: list[str] | None) -> Iterator[_Rows]:
    """The rows of tab-separated text, a decoded piece at a time, by Arrow's string kernels: the rows
    and errors of `_records_delimited` (ingest of 6.7 million rows: 47.5 s before, 16 s after).

    Tab-separated text has no quoting, so each line is a row and each tab a field boundary. A piece
    with anything else in it (a row with another number of fields, a field over the csv module's
    size limit, a bad header) is read by `_records_delimited`, which names the line: its rows
    before the error come out first, as they would there.
    """
    header = None if columns is None else list(columns)
    limit = csv.field_size_limit()
    lines_before = 0
    for piece in pieces:
        lines = pc.split_pattern_regex(pa.array([piece], pa.large_string()), _LINE_END).flatten()
        if piece.endswith(("\n", "\r")):  # the text after the last line end is no line
            lines = lines.slice(0, len(lines) - 1)
        first = 0
        if header is None:
            head = lines[0].as_py()
            header = head.split("\t") if head else []
            _check_header(path, header, "\t")
            first = 1
        body = lines.slice(first)
        nonblank = pc.greater(pc.binary_length(body), 0)  # a blank line carries no row
        fields = pc.split_pattern(body.filter(nonblank), "\t")
        lengths = pc.utf8_length(pc.list_flatten(fields))
        ragged = pc.any(pc.not_equal(pc.list_value_length(fields), len(header))).as_py()
        if ragged or max(map(len, header)) > limit or (len(lengths) and pc.max(lengths).as_py() > limit):
            yield from _rows_by_csv(path, header, piece, None if first else header, lines_before)
        else:
            numbers = lines_before + first + 1 + np.flatnonzero(nonblank.to_numpy(zero_copy_only=False))
            yield _Rows(numbers, header, fields)
        lines_before += len(lines)


def _rows_by_csv(
    path: Path, header: list[str], piece: str, columns: list[str] | None, lines_before: int
) -> Iterator[_Rows]:
    """`_records_delimited` on one piece of tab-separated text, as _Rows: the rows before its error, if
    any, then the error."""
    numbers: list[int] = []
    rows: list[list[str]] = []
    failure: DataError | None = None
    try:
        for line, record in _records_delimited(path, _lines(piece), "\t", columns, lines_before):
            numbers.append(line)
            rows.append(list(record.values()))
    except DataError as error:
        failure = error
    yield _Rows(np.array(numbers, np.int64), header, pa.array(rows, pa.list_(pa.large_string())))
    if failure is not None:
        raise failure


def _records_jsonl(path: Path, pieces: Iterable[str]) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield (line number, record) from decoded pieces of JSON Lines (lines end with \\n only)."""
    number = 0
    for piece in pieces:
        # A piece ends with its last line's newline, which starts no line of its own.
        for line in piece.removesuffix("\n").split("\n"):
            number += 1
            if line.strip():
                yield number, _json_record(path, line, number)


def _json_record(path: Path, line: str, number: int) -> dict[str, object]:
    """One JSON Lines record, or the DataError that names its line and column."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON: {exc.msg}", line=number, column=exc.colno) from None
    except RecursionError:
        raise DataError(path, "not valid JSON: nested too deeply", line=number) from None
    if not isinstance(record, dict):
        raise DataError(path, f"expected a JSON object per line, found {type(record).__name__}", line=number)
    return record


def _records_parquet(path: Path, content: Path | bytes, limit: int) -> Iterator[tuple[int, dict[str, object]]]:
    """Yield (row number, row), a row group's batch at a time, within `limit` decoded bytes.

    A few KB of Parquet can hold millions of copies of one long text (dictionary, run-length and
    delta encodings): a 421 KB file once decoded to 4 GB. So text columns are read as dictionaries
    (each distinct value held once) and every value is counted, dictionary entries at each use,
    before a batch becomes Python rows.

    Raises:
        DataError: damaged, or decodes to more than `limit` bytes (naming the row where it passes it,
            and the column holding most of them).
    """
    import pyarrow.parquet as pq

    number = 0
    try:
        # pre_buffer off: its cache would hold every row group read until the file closes.
        source = io.BytesIO(content) if isinstance(content, bytes) else content
        with pq.ParquetFile(source) as footer:
            _check_declared_size(path, footer.metadata, limit)
            texts = [column.path for column in footer.schema if column.physical_type == "BYTE_ARRAY"]
        parquet = pq.ParquetFile(source, pre_buffer=False, read_dictionary=texts)
        budget = _DecodedBudget(path, limit)
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            budget.spend(batch, number)
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise DataError(path, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None


def _check_declared_size(path: Path, metadata: Any, limit: int) -> None:
    """Refuse a Parquet file whose footer declares more than `limit` uncompressed bytes (nothing decoded)."""
    declared = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if declared > limit:
        raise DataError(
            path, f"{declared} bytes uncompressed (Parquet metadata), past data.max_expanded_bytes ({limit} bytes)"
        )


class _DecodedBudget:
    """The bytes a Parquet file's values decode to, counted batch by batch against a limit."""

    def __init__(self, path: Path, limit: int):
        self.path, self.limit, self.spent = path, limit, 0
        self.by_column: dict[str, int] = {}

    def spend(self, batch: pa.RecordBatch, rows_before: int) -> None:
        """Count `batch` (the rows after `rows_before`); DataError when the total passes the limit."""
        if not batch.num_rows:
            return
        sizes = np.zeros(batch.num_rows, np.int64)
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            column_sizes = _value_bytes(column)
            self.by_column[name] = self.by_column.get(name, 0) + int(column_sizes.sum())
            sizes += column_sizes
        running = self.spent + np.cumsum(sizes)
        self.spent = int(running[-1])
        if self.spent > self.limit:
            row = rows_before + 1 + int(np.argmax(running > self.limit))
            column = max(self.by_column, key=lambda name: self.by_column[name])
            raise DataError(
                self.path,
                f"decodes past data.max_expanded_bytes ({self.limit} bytes) by this row, most of it in this "
                "column: not read (a Parquet bomb? the same text repeated millions of times)",
                line=row,
                field=column,
            )


def _value_bytes(values: pa.Array) -> np.ndarray:
    """The bytes each value of `values` decodes to (int64 per row; a dictionary's entry counted at each use)."""
    kind, rows = values.type, len(values)
    if pa.types.is_dictionary(kind):
        entries = _value_bytes(values.dictionary)
        if not len(entries):
            return np.zeros(rows, np.int64)
        indices = pc.fill_null(values.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.where(values.is_null().to_numpy(zero_copy_only=False), 0, entries[indices])
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        return _numbers(pc.binary_length(values))
    if pa.types.is_large_binary(kind) or pa.types.is_string_view(kind) or pa.types.is_binary_view(kind):
        return _numbers(pc.binary_length(values))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        lengths = _numbers(pc.list_value_length(values))
        inner = np.concatenate([[0], np.cumsum(_value_bytes(values.flatten()))])
        ends = np.cumsum(lengths)
        return inner[ends] - inner[ends - lengths]
    if pa.types.is_struct(kind):
        total = np.zeros(rows, np.int64)
        for field in values.flatten():
            total += _value_bytes(field)
        return total
    width = kind.bit_width // 8 if pa.types.is_primitive(kind) else values.nbytes // max(rows, 1)
    return np.full(rows, max(width, 1), np.int64)


def _numbers(values: pa.Array) -> np.ndarray:
    """An Arrow integer array as int64, nulls as 0."""
    return pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _spreadsheet_value(value: object, where: Path, cell: str) -> str:
    """A spreadsheet cell as text: numbers as a person writes them, dates in ISO form."""
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()  # Excel stores dates as midnight
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bool):
        raise DataError(where, f"cell {cell}: expected text or a number, found a boolean ({value})")
    if value is None or isinstance(value, (str, int, float)):
        return _cell(value, where, 0, cell)
    raise DataError(where, f"cell {cell}: expected text or a number, found {type(value).__name__}")


def _records_spreadsheet(
    path: Path, content: Path | bytes, sheet: str | None, columns: list[str] | None, limit: int
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (row number, row) from one sheet of an `.xlsx` workbook (data.sheet, or the first), within
    `limit` bytes: of its XML (a workbook is a .zip) and of its cell texts (a shared string counts at each use)."""
    import openpyxl
    from openpyxl.utils import get_column_letter

    _check_workbook_size(path, content, limit)
    spent = 0
    try:
        book = openpyxl.load_workbook(
            io.BytesIO(content) if isinstance(content, bytes) else content, read_only=True, data_only=True
        )
    except Exception as exc:  # noqa: BLE001 - openpyxl and zipfile raise many types for a damaged file
        raise DataError(path, f"not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise DataError(path, f"no sheet {sheet!r} (data.sheet); the workbook has {book.sheetnames}")
        name = sheet or book.sheetnames[0]
        where = Path(f"{path}[{name}]")
        header = list(columns) if columns is not None else None
        for number, row in enumerate(book[name].iter_rows(values_only=True), start=1):
            values = [
                _spreadsheet_value(value, where, f"{get_column_letter(i)}{number}") for i, value in enumerate(row, 1)
            ]
            while values and values[-1] == "":  # cells past the table's last column
                values.pop()
            if not values:
                continue
            if header is None:
                header = values
                _check_header(where, header, ",")
                continue
            if len(values) > len(header):
                raise _ragged(where, header, values, number)
            spent += sum(map(len, values))
            if spent > limit:
                raise DataError(
                    where, f"the cell texts pass data.max_expanded_bytes ({limit} bytes) by this row", line=number
                )
            yield number, dict(zip(header, values + [""] * (len(header) - len(values)), strict=True))
    finally:
        book.close()


def _check_workbook_size(path: Path, content: Path | bytes, limit: int) -> None:
    """Refuse a workbook whose parts (a .zip's members) declare more than `limit` bytes uncompressed."""
    try:
        with zipfile.ZipFile(io.BytesIO(content) if isinstance(content, bytes) else content) as book:
            declared = sum(member.file_size for member in book.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(path, f"not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from None
    if declared > limit:
        raise DataError(path, f"expands past data.max_expanded_bytes ({limit} bytes): {declared} bytes of XML")


def _cell(value: object, where: Path, line: int, field: str) -> str:
    """A text or label value as text; numbers are written the way a person would (1.0 -> '1')."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise DataError(where, f"expected text or a number, found a boolean ({value})", line=line, field=field)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else str(float(value))
    raise DataError(where, f"expected text or a number, found {type(value).__name__}", line=line, field=field)


def _raw_batches(
    records: Iterable[tuple[int, dict]], config: DataConfig, where: Path, name: str, split: str | None
) -> Iterator[pd.DataFrame]:
    """Turn (line, record) pairs into the raw schema (text, label, split, row id, file, line), BATCH_ROWS rows
    at a time."""
    sample: list[dict] = []  # the first records, to suggest columns when the text column is not text
    text_col = label_col = ""
    file_name = str(where)
    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    checked = False

    def batch() -> pd.DataFrame:
        nonlocal checked
        if not checked:
            _check_text_is_language(where, texts[:_SAMPLE], text_col, label_col, sample)
            checked = True
        return pd.DataFrame(
            {
                TEXT: texts,
                LABEL: labels,
                SPLIT: split,
                ROW_ID: [f"{name}:{line}" for line in lines],
                SOURCE_FILE: file_name,
                SOURCE_LINE: lines,
            }
        )

    for line, record in records:
        if len(sample) < _SAMPLE:
            sample.append(record)
        if not text_col:
            columns = list(record)
            text_col = _pick_column(columns, config.text_column, where, "text")
            label_col = _pick_column(columns, [config.label_column], where, "label")
        for column in (text_col, label_col):
            if column not in record:
                raise DataError(where, "missing in this row", line=line, field=column)
        texts.append(_cell(record[text_col], where, line, text_col))
        labels.append(_cell(record[label_col], where, line, label_col))
        lines.append(line)
        if len(lines) == BATCH_ROWS:
            yield batch()
            texts, labels, lines = [], [], []
    if not checked and not lines:
        raise DataError(where, "no data rows (only a header, or empty)")
    if lines:
        yield batch()


def _raw_batches_of_rows(
    chunks: Iterable[_Rows], config: DataConfig, where: Path, name: str, split: str | None
) -> Iterator[pd.DataFrame]:
    """`_raw_batches` of rows read column-wise: the same batches, checks and errors, in the same order."""
    text_col = label_col = ""
    sample: list[dict] = []
    held: list[pa.Table] = []
    checked = False

    def batch(table: pa.Table) -> pd.DataFrame:
        nonlocal checked
        if not checked:
            _check_text_is_language(where, table[TEXT][:_SAMPLE].to_pylist(), text_col, label_col, sample)
            checked = True
        lines = table[SOURCE_LINE]
        return pd.DataFrame(
            {
                TEXT: _strings(table[TEXT]),
                LABEL: _strings(table[LABEL]),
                SPLIT: split,
                ROW_ID: _strings(
                    pc.binary_join_element_wise(
                        pa.scalar(f"{name}:", pa.large_string()),
                        pc.cast(lines, pa.large_string()),
                        pa.scalar("", pa.large_string()),
                    )
                ),
                SOURCE_FILE: str(where),
                SOURCE_LINE: lines.to_numpy(),
            }
        )

    for chunk in chunks:
        if not len(chunk.lines):
            continue
        if not text_col:
            text_col = _pick_column(chunk.header, config.text_column, where, "text")
            label_col = _pick_column(chunk.header, [config.label_column], where, "label")
            sample = chunk.records(_SAMPLE)
        held.append(pa.table({TEXT: chunk.column(text_col), LABEL: chunk.column(label_col), SOURCE_LINE: chunk.lines}))
        rows = pa.concat_tables(held)
        while len(rows) >= BATCH_ROWS:
            yield batch(rows.slice(0, BATCH_ROWS))
            rows = rows.slice(BATCH_ROWS)
        held = [rows]
    left = sum(map(len, held))
    if not checked and not left:
        raise DataError(where, "no data rows (only a header, or empty)")
    if left:
        yield batch(pa.concat_tables(held))


def _strings(values: pa.ChunkedArray | pa.Array) -> pd.Series:
    """Arrow strings as pandas' `str` column, without a copy to Python objects."""
    chunked = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    return pd.Series(pd.arrays.ArrowStringArray(chunked, dtype=pd.StringDtype("pyarrow", na_value=np.nan)))


# Rows looked at to judge whether the text column holds language, and the share of them
# without words (validate's text_language) above which the column, not the rows, is wrong.
_SAMPLE, _MOSTLY = 200, 0.5


def _check_text_is_language(where: Path, texts: list[str], text_col: str, label_col: str, sample: list[dict]) -> None:
    """Fail when most texts have no words: the column mapped as text is an id, a price, a date or a URL."""
    shown = [text for text in texts if text.strip()]
    if len(shown) < 10:  # too few to tell a column from a few odd rows
        return
    odd = [text for text in shown if not_language(text)]
    if len(odd) <= _MOSTLY * len(shown):
        return
    candidates = []
    for column in sample[0]:
        if column in (text_col, label_col):
            continue
        values = [value for record in sample if isinstance(value := record.get(column), str) and value.strip()]
        if values and sum(not_language(value) is None for value in values) > _MOSTLY * len(values):
            candidates.append(column)
    others = f"columns that look like text: {candidates}" if candidates else "no other column looks like text"
    raise DataError(
        where,
        f"the text column {text_col!r} looks like ids, numbers, codes or addresses, not language: "
        f"{len(odd)} of the first {len(shown)} texts have no words (e.g. {odd[0][:40]!r}); {others} "
        "(set data.text_column)",
        field=text_col,
    )


def data_format(name: str) -> tuple[str, str | None] | None:
    """(format suffix, compression suffix or None) of a data file's name, `(".zip", None)` for an
    archive, or None when the name is not one of a data file."""
    suffixes = [suffix.lower() for suffix in PurePath(name).suffixes]
    if suffixes[-1:] == [ARCHIVE]:
        return ARCHIVE, None
    compression = suffixes.pop() if suffixes[-1:] and suffixes[-1] in COMPRESSIONS else None
    return (suffixes[-1], compression) if suffixes and suffixes[-1] in SUFFIXES else None


def data_stem(name: str) -> str:
    """A data file's name without its format and compression suffixes (`train.csv.gz` -> `train`)."""
    kind = data_format(name)
    parts = 1 + (kind is not None and kind[1] is not None)
    return name.rsplit(".", parts)[0] if kind else PurePath(name).stem


def _expand(path: Path, compression: str, config: DataConfig) -> bytes:
    """The decompressed content of `path`, read in chunks up to data.max_expanded_bytes."""
    openers: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zst": _zstd_open}
    opener = openers[compression]
    limit, chunks, size = config.max_expanded_bytes, [], 0
    try:
        with opener(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise DataError(
                        path, f"expands past data.max_expanded_bytes ({limit} bytes): not read (a compression bomb?)"
                    )
                chunks.append(chunk)
    except DataError:
        raise
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise DataError(path, f"not a readable {compression} file ({type(exc).__name__}: {exc})") from None
    return b"".join(chunks)


def _zstd_open(path: Path, mode: str) -> Any:
    import zstandard

    return zstandard.open(path, mode)


def _sentence_records(
    where: Path, kind: str, content: Path | bytes, config: DataConfig
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {text, label}) per sentence of a CoNLL column file or of JSON Lines with token and tag lists."""
    if kind not in (".txt", ".conll", ".jsonl", ".json"):
        raise DataError(
            where,
            f"token classification reads CoNLL column files (.txt, .conll) and JSON Lines "
            f'({{"tokens": [...], "tags": [...]}} per line), not {kind} files',
        )
    pieces = decoded_pieces(content, where)
    sentences: Iterator[Sentence]
    if kind in (".jsonl", ".json"):
        sentences = (jsonl_sentence(where, record, number) for number, record in _records_jsonl(where, pieces))
    else:
        sentences = conll_sentences(where, _text_lines(pieces), config.word_field, config.tag_field)
    for sentence in sentences:
        if config.tag_scheme == "iob1":
            sentence.tags = iob1_to_iob2(sentence.tags)
        yield sentence.line, sentence.record()


def _read_content(
    where: Path, kind: str, content: Path | bytes, config: DataConfig, name: str, split: str | None, task: Task
) -> Iterator[pd.DataFrame]:
    """One file's content (a path, or bytes already read or expanded) of format `kind` in the raw schema,
    in batches."""
    if task == "token_classification":
        sentences = config.model_copy(update={"text_column": ["text"], "label_column": "label"})
        return _raw_batches(_sentence_records(where, kind, content, config), sentences, where, name, split)
    if kind == ".conll":
        raise DataError(where, "a CoNLL file holds tags per word: set `task: token_classification` to read it")
    if kind not in (".parquet", ".xlsx", ".jsonl", ".json") and (SUFFIXES[kind] or config.sep) == "\t":
        rows = _rows_tab_separated(where, decoded_pieces(content, where), config.columns)
        return _raw_batches_of_rows(rows, config, where, name, split)
    return _raw_batches(_content_records(where, kind, content, config), config, where, name, split)


def _content_records(
    where: Path, kind: str, content: Path | bytes, config: DataConfig
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) of one file's content of format `kind`, every column as read."""
    if kind == ".conll":
        raise DataError(where, "a CoNLL file holds tags per word, not a table of texts")
    if kind == ".parquet":
        return _records_parquet(where, content, config.max_expanded_bytes)
    if kind == ".xlsx":
        return _records_spreadsheet(where, content, config.sheet, config.columns, config.max_expanded_bytes)
    pieces = decoded_pieces(content, where)
    if kind in (".jsonl", ".json"):
        return _records_jsonl(where, pieces)
    delimiter = SUFFIXES[kind] or config.sep
    lines = _text_lines(pieces)
    if delimiter is None:
        first = list(itertools.islice(lines, SNIFFED_LINES))
        delimiter = sniff_delimiter(where, first, config.columns)
        lines = itertools.chain(first, lines)
    return _records_delimited(where, lines, delimiter, config.columns)


def _open_archive(path: Path) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """A `.zip` and its data files, by name (close the archive when done)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(path, f"not a readable .zip archive ({exc})") from None
    members = sorted(
        (m for m in archive.infolist() if not m.is_dir() and data_format(m.filename) not in (None, (ARCHIVE, None))),
        key=lambda m: m.filename,
    )
    if not members:
        archive.close()
        raise DataError(path, f"no data files ({', '.join(sorted(SUFFIXES))}) in this archive")
    return archive, members


def _member_content(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path, config: DataConfig
) -> tuple[Path, str, bytes]:
    """(where, format suffix, content) of one data file of an archive; `where` (`archive.zip/member`) is what
    errors name."""
    where = Path(f"{path}/{member.filename}")
    if member.file_size > config.max_expanded_bytes:
        raise DataError(where, f"expands past data.max_expanded_bytes ({config.max_expanded_bytes} bytes)")
    kind, compression = data_format(member.filename) or ("", None)
    if compression:
        raise DataError(where, "a compressed file inside an archive: put the plain file in the .zip")
    try:
        content = archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise DataError(where, f"cannot be read from the archive ({exc})") from None
    return where, kind, content


def _read_archive(path: Path, config: DataConfig, split: str | None, task: Task) -> Iterator[pd.DataFrame]:
    """Every data file inside a `.zip` (named `archive.zip/member` in errors and row ids), in batches."""
    archive, members = _open_archive(path)
    with archive:
        splits = [split] * len(members) if split else _splits(path, [PurePath(m.filename).name for m in members])
        for member, member_split in zip(members, splits, strict=True):
            where, kind, content = _member_content(archive, member, path, config)
            yield from _read_content(where, kind, content, config, f"{path.name}/{member.filename}", member_split, task)


def _checked_format(path: Path) -> tuple[str, str | None]:
    """`data_format` of a file's name, or the DataError that lists the formats read."""
    kind = data_format(path.name)
    if kind is None:
        formats = ", ".join(sorted(SUFFIXES))
        raise DataError(
            path,
            f"unsupported format '{path.suffix.lower()}': use one of {formats}, "
            f"optionally compressed ({', '.join(COMPRESSIONS)}) or in a {ARCHIVE}",
        )
    return kind


def read_file(
    path: Path, config: DataConfig, split: str | None = None, task: Task = "sequence_classification"
) -> pd.DataFrame:
    """Read one file (compressed, or a .zip of files) into the raw schema (`iter_file`, whole)."""
    return _whole(iter_file(path, config, split, task))


def iter_file(
    path: Path, config: DataConfig, split: str | None = None, task: Task = "sequence_classification"
) -> Iterator[pd.DataFrame]:
    """Read one file (compressed, or a .zip of files) into the raw schema, BATCH_ROWS rows at a time.

    Raises:
        DataError: unknown format, bad encoding, wrong or ambiguous delimiter, ragged
            rows, unclosed quotes, missing columns, no rows, a damaged or oversized archive.
    """
    kind = _checked_format(path)
    if kind[0] == ARCHIVE:
        yield from _read_archive(path, config, split, task)
        return
    content: Path | bytes = _expand(path, kind[1], config) if kind[1] else path
    yield from _read_content(path, kind[0], content, config, path.name, split, task)


def iter_records(path: Path, config: DataConfig) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Every row of one file (compressed, or each data file of a .zip) with all its columns, as
    (where, line, record): the formats, decoding and located errors of `iter_file`, for callers that
    keep every column (`textclf score`). Values are text for delimited files and spreadsheets, JSON's
    own for JSON Lines, and Python values for Parquet (whose callers may read it column-wise instead).

    Raises:
        DataError: as `iter_file`, and for a CoNLL file (no table of texts).
    """
    kind = _checked_format(path)
    if kind[0] == ARCHIVE:
        archive, members = _open_archive(path)
        with archive:
            for member in members:
                where, suffix, data = _member_content(archive, member, path, config)
                for line, record in _content_records(where, suffix, data, config):
                    yield where, line, record
        return
    content: Path | bytes = _expand(path, kind[1], config) if kind[1] else path
    for line, record in _content_records(path, kind[0], content, config):
        yield path, line, record


def _whole(batches: Iterable[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(list(batches), ignore_index=True)


def iter_folder(folder: Path, config: DataConfig, task: Task = "sequence_classification") -> Iterator[pd.DataFrame]:
    """Every supported file in a folder, in batches; stems like train/dev/test keep their split."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and data_format(p.name) is not None)
    if not files:
        raise DataError(folder, f"no data files ({', '.join(sorted(SUFFIXES))}, compressed or zipped) in this folder")
    named = _splits(folder, [p.name for p in files])
    for path, split in zip(files, named, strict=True):
        yield from iter_file(path, config, split, task)


def _splits(container: Path, names: list[str]) -> list[str | None]:
    """The split each file of a folder or archive names (train/dev/test...), or None for every file."""
    named = [SPLIT_NAMES.get(data_stem(name).lower()) for name in names]
    if any(named) and not all(named):
        odd = next(name for name, split in zip(names, named, strict=True) if split is None)
        raise DataError(
            container / odd,
            f"cannot tell which split this file is: name files {sorted(set(SPLIT_NAMES))}, or none of them",
        )
    return named


def read_hub(dataset_id: str, config: DataConfig) -> Iterator[pd.DataFrame]:
    """Load a Hugging Face dataset, in batches; fails with a clear message without network."""
    source = f"hf:{dataset_id}"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise DataError(
            source,
            "Hugging Face datasets need network access, and HF_HUB_OFFLINE is set. "
            "Download the dataset where there is network and point data.source at "
            "the files, or unset HF_HUB_OFFLINE.",
        )
    import datasets  # heavy; only this source needs it

    try:
        loaded = datasets.load_dataset(dataset_id)
    except Exception as exc:  # noqa: BLE001 - the hub client raises many unrelated types offline
        raise DataError(
            source,
            f"could not load from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "This source needs network access; offline, point data.source at local files.",
        ) from None
    for name, part in loaded.items():
        yield from _raw_batches(
            enumerate(part, start=1), config, Path(f"{source}[{name}]"), name, SPLIT_NAMES.get(name.lower(), "train")
        )


def read_source(config: DataConfig, root: Path, task: Task = "sequence_classification") -> pd.DataFrame:
    """Read `config.source` into the raw schema, whole (`iter_source`)."""
    return _whole(iter_source(config, root, task))


def iter_source(config: DataConfig, root: Path, task: Task = "sequence_classification") -> Iterator[pd.DataFrame]:
    """Read `config.source` into the raw schema, BATCH_ROWS rows at a time (a file's errors may come after
    some of its batches: write them somewhere the failure discards).

    Args:
        config: the `data` section.
        root: the repo root, against which a relative source path is resolved.
        task: `token_classification` reads sentences of tagged words (tasks.lib.data.sentences).
    """
    source = config.source
    if source == "demo" and task == "token_classification":
        unknown = sorted(set(config.labels) - set(DEMO_TYPES))
        if unknown:
            raise DataError("demo", f"the demo source tags {list(DEMO_TYPES)}; data.labels also has {unknown}")
        frame = generate_sentences(config.demo.rows, config.demo.seed, list(config.labels))
    elif source == "demo":
        if len(config.labels) != 2:
            raise DataError("demo", f"the demo source makes binary data; data.labels has {config.labels}")
        frame = generate_reviews(
            config.demo.rows, config.demo.label_noise, config.demo.seed, (config.labels[0], config.labels[1])
        )
    if source == "demo":
        frame[SPLIT] = None
        frame[ROW_ID] = [f"demo:{i + 1}" for i in range(len(frame))]
        frame[SOURCE_FILE] = "demo"
        frame[SOURCE_LINE] = range(1, len(frame) + 1)
        yield frame
        return
    if source.startswith("hf:"):
        yield from read_hub(source[3:], config)
        return
    path = (Path(source) if Path(source).is_absolute() else root / source).resolve()
    if path.is_dir():
        yield from iter_folder(path, config, task)
        return
    if path.is_file():
        yield from iter_file(path, config, task=task)
        return
    if not Path(source).is_absolute() and not path.is_relative_to(root.resolve()):
        # A worker runs each flow in a fresh clone: what lay beside the repository on one host is not there.
        raise DataError(
            path,
            f"data.source {source!r} is outside this workspace ({root}) and is not there: a Prefect worker "
            "runs each flow in a fresh clone, with nothing beside it. Put the data in the repository, at an "
            "absolute path every worker mounts, or send it through the landing host (docs/guides/team.md)",
        )
    raise DataError(path, "data.source: no such file or folder (use a path, `demo` or `hf:<id>`)")
