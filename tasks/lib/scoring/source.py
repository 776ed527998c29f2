"""The table `textclf score` reads: a file or a folder of files, on this machine or in object storage.

Any format the readers take (tasks.lib.data.readers: CSV, TSV, TXT, JSON Lines, Parquet, XLSX,
compressed or zipped); a folder's data files, in name order, are one table. A plain Parquet file
is read column-wise a batch at a time with its own types; the other formats record by record,
through the readers, so their errors name the file, line and field. An object-store input is
copied to a temporary folder first: every byte is hashed anyway, for the fingerprint that a
resumed run and a finished output are matched against (each file's name, size and SHA-256).

Each row's text is checked before it is scored: a missing value, a text with nothing visible in
it (as the HTTP service refuses), a JSON value that is not a string, or a lone surrogate gets a
reason instead of an answer, and is counted; it never stops the run.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tasks.lib.config import DataConfig
from tasks.lib.data.readers import BATCH_ROWS, data_format, iter_records
from tasks.lib.data.text_columns import visible_column
from tasks.lib.errors import DataError
from tasks.lib.io import is_url
from tasks.lib.storage.object_store import ObjectStore

# Why a row gets no answer (the output's reason column, the manifest's counts).
NO_TEXT = "no text (a missing value)"
INVISIBLE = "no visible character (empty, spaces or control characters)"
NOT_UNICODE = "not valid Unicode (a lone surrogate)"
NOT_UTF8 = "not valid UTF-8"
# Rows of each batch whose file and line the manifest lists, of those not scored.
EXAMPLES = 20
_HASH_CHUNK = 1 << 22
# Formats whose line count (less a header) estimates their rows, for the progress bar's ETA.
_LINE_FORMATS = {".csv": 1, ".tsv": 1, ".txt": 1, ".jsonl": 0, ".json": 0}


@dataclass(frozen=True)
class InputFile:
    """One file of the input: where it is read (`path`, local), what the manifest calls it (`name`)."""

    path: Path
    name: str
    size: int
    sha256: str
    rows: int | None  # exact for Parquet, the line count for plain text, None when unknown

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Source:
    """The files of an input, in the order their rows are read."""

    location: str
    files: list[InputFile]

    @property
    def fingerprint(self) -> str:
        """SHA-256 over every file's name, size and SHA-256: equal exactly when the bytes read are equal."""
        lines = "".join(f"{f.name}\t{f.size}\t{f.sha256}\n" for f in self.files)
        return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()

    @property
    def rows(self) -> int | None:
        """The rows to expect (exact for Parquet, estimated from lines for plain text), None when unknown."""
        counts = [f.rows for f in self.files]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def _hash_file(path: Path) -> tuple[str, int]:
    """(SHA-256, newline count) of a file, read once."""
    digest, lines = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return digest.hexdigest(), lines


def _input_file(path: Path, name: str) -> InputFile:
    digest, lines = _hash_file(path)
    kind = data_format(path.name)
    rows: int | None = None
    if kind == (".parquet", None):
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            raise DataError(path, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    elif kind is not None and kind[1] is None and kind[0] in _LINE_FORMATS:
        rows = max(0, lines - _LINE_FORMATS[kind[0]])
    return InputFile(path, name, path.stat().st_size, digest, rows)


def _data_names(names: Iterable[str]) -> list[str]:
    return sorted(name for name in names if data_format(name) is not None)


@contextlib.contextmanager
def opened_source(location: str, root: Path) -> Iterator[Source]:
    """The input at `location` (a file or folder, relative to `root`, or an object-store URL), hashed;
    a remote one is copied to a temporary folder that lasts as long as the block.

    Raises:
        DataError: nothing there, or a folder without data files.
    """
    if not is_url(location):
        path = Path(location) if Path(location).is_absolute() else root / location
        if path.is_dir():
            names = _data_names(p.name for p in path.iterdir() if p.is_file())
            if not names:
                raise DataError(path, "no data files (CSV, TSV, TXT, JSONL, Parquet, XLSX, compressed or zipped) here")
            yield Source(location, [_input_file(path / name, name) for name in names])
        elif path.is_file():
            yield Source(location, [_input_file(path, path.name)])
        else:
            raise DataError(path, "no such file or folder to score")
        return
    store = ObjectStore(location)
    if store.fs.isdir(store.root):
        names = _data_names(store.list())
        if not names:
            raise DataError(location, "no data files (CSV, TSV, TXT, JSONL, Parquet, XLSX, compressed or zipped) here")
    elif store.exists(""):
        parent, _, name = location.rstrip("/").rpartition("/")
        store, names = ObjectStore(parent), [name]
    else:
        raise DataError(location, "no such object or prefix to score")
    with tempfile.TemporaryDirectory(prefix="textclf-score-input-") as folder:
        files = []
        for name in names:
            store.download(name, Path(folder) / name)
            files.append(_input_file(Path(folder) / name, name))
        yield Source(location, files)


@dataclass
class InputBatch:
    """Rows of one file: the columns kept, each row's text (None where it is not scored) and why not."""

    kept: pa.Table
    texts: list[str | None]
    reasons: list[str | None]
    examples: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, reason), the first few


def pick_text_column(columns: list[str], candidates: list[str], where: str) -> str:
    """The first of `candidates` the file has, or a DataError naming what it has (and a close name)."""
    for name in candidates:
        if name in columns:
            return name
    close = [m for name in candidates for m in difflib.get_close_matches(name, columns, n=1, cutoff=0.75)]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DataError(
        where,
        f"no text column: looked for {candidates}, the file has {columns}{hint} (give --text-column, or set "
        "data.text_column)",
        line=1,
    )


def _checked_texts(values: list[Any]) -> tuple[list[str | None], list[str | None]]:
    """Each value as a text to score, or None and the reason it is not one."""
    texts: list[str | None] = []
    reasons: list[str | None] = []
    for value in values:
        text, reason = _text_or_reason(value)
        texts.append(text)
        reasons.append(reason)
    return _visible(texts, reasons, pd.Series([t if t is not None else "" for t in texts], dtype=object))


def _visible(
    texts: list[str | None], reasons: list[str | None], column: pd.Series
) -> tuple[list[str | None], list[str | None]]:
    """`texts` and `reasons` with the texts that show nothing (`column`: the same texts as a Series) set aside."""
    shown = visible_column(column)
    for i in np.flatnonzero(~shown):
        if reasons[i] is None:
            texts[i], reasons[i] = None, INVISIBLE
    return texts, reasons


def _text_or_reason(value: Any) -> tuple[str | None, str | None]:
    """(the text, None), or (None, why `value` is no text to score)."""
    if value is None:
        return None, NO_TEXT
    if not isinstance(value, str):
        return None, f"not text: a {type(value).__name__} ({str(value)[:40]!r})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, NOT_UNICODE
    return value, None


def _as_text(value: Any) -> str | None:
    """A text column's value as it is kept in the output: text, whatever the row held."""
    if value is None:
        return None
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _arrow_texts(column: pa.ChunkedArray) -> tuple[list[str | None], list[str | None]]:
    """`_checked_texts` of an Arrow string column; bytes that are not UTF-8 make that row's reason."""
    try:
        texts: list[str | None] = column.to_pylist()
    except UnicodeDecodeError:  # Parquet does not promise valid UTF-8
        pass
    else:
        # Arrow strings are str or None: only the missing and the invisible are set aside, judged on the
        # Arrow array itself (pandas holds it without a copy).
        reasons: list[str | None] = [NO_TEXT if text is None else None for text in texts]
        strings = column.cast(pa.large_string()) if not pa.types.is_large_string(column.type) else column
        series = pd.Series(pd.arrays.ArrowStringArray(strings, dtype=pd.StringDtype("pyarrow", na_value=np.nan)))
        return _visible(texts, reasons, series)
    values: list[Any] = []
    for raw in column.cast(pa.binary()).to_pylist():
        try:
            values.append(None if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(raw)  # bytes: `not text`
    texts, reasons = _checked_texts(values)
    return texts, [NOT_UTF8 if r and r.startswith("not text: a bytes") else r for r in reasons]


def _is_text_type(kind: pa.DataType) -> bool:
    """Whether an Arrow column of this type holds texts (or only nulls)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind))


def _member_name(file: InputFile, path: Path) -> str:
    """What the manifest calls a row's file: the input file's name, or for a .zip's member `archive.zip/member`."""
    return file.name if path == file.path else f"{file.name}/{path.relative_to(file.path)}"


def _examples(name: str, lines: Iterable[int], reasons: list[str | None]) -> list[tuple[str, int, str]]:
    found = [(name, int(line), reason) for line, reason in zip(lines, reasons, strict=True) if reason is not None]
    return found[:EXAMPLES]


class TableReader:
    """An input's rows in batches: the columns to keep, in the types of the first file, and the text column.

    Args:
        data: the `data` section (the text column's candidate names; how headerless and .txt files are read).
        text_column: the text column (None: the first of data.text_column the first file has).
        keep: the columns to keep, in this order (None: every column the first file has).
    """

    def __init__(self, source: Source, data: DataConfig, text_column: str | None, keep: list[str] | None):
        self.source, self.data = source, data
        self.candidates = [text_column] if text_column else list(data.text_column)
        self.keep = keep
        self.text_column = ""
        self.schema: pa.Schema | None = None  # of the kept columns, fixed by the first batch

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[InputBatch]:
        """Every row of every file, in order, at most `rows` a batch (a batch holds rows of one file)."""
        for file in self.source.files:
            if data_format(file.path.name) == (".parquet", None):
                yield from self._parquet(file, rows)
            else:
                yield from self._records(file, rows)

    def _columns(self, columns: list[str], where: str) -> list[str]:
        """The kept columns, chosen with the first batch (the text column too) and checked against each file."""
        if self.schema is None:
            self.text_column = pick_text_column(columns, self.candidates, where)
            kept = self.keep if self.keep is not None else columns
            missing = [name for name in kept if name not in columns]
            if missing:
                raise DataError(where, f"--keep names {missing}, which the file does not have (it has {columns})")
            return list(kept)
        kept = self.schema.names
        if self.text_column not in columns:
            raise DataError(where, f"no column {self.text_column!r}, the text column of the first file", line=1)
        missing = [name for name in kept if name not in columns]
        extra = [name for name in columns if name not in kept and name != self.text_column]
        if missing or (extra and self.keep is None):
            raise DataError(
                where,
                f"its columns {columns} are not the first file's {[*kept]}"
                + ("" if self.keep is not None else ": choose the columns to keep with --keep"),
                line=1,
            )
        return list(kept)

    def _conform(self, table: pa.Table, where: str) -> pa.Table:
        """`table` in the kept schema; the first batch fixes it (columns of nulls only become text)."""
        if self.schema is None:
            fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
            self.schema = pa.schema(fields)
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise DataError(
                where, f"its columns' types {table.schema.types} do not fit the first file's {self.schema.types}: {exc}"
            ) from None

    def _parquet(self, file: InputFile, rows: int) -> Iterator[InputBatch]:
        import pyarrow.parquet as pq

        where = str(file.path)
        try:
            # No pre-buffering: its cache keeps every row group read until the file closes (55 MB per
            # million rows of this table's kind), where one row group at a time is what streaming needs.
            parquet = pq.ParquetFile(file.path, pre_buffer=False)
            columns = parquet.schema_arrow.names
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            raise DataError(where, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        kept = self._columns(columns, where)
        text = parquet.schema_arrow.field(self.text_column).type
        if not _is_text_type(text):
            raise DataError(where, f"the text column holds {text} values, not text", field=self.text_column)
        wanted = list(dict.fromkeys([*kept, self.text_column]))
        first = 1
        try:
            for batch in parquet.iter_batches(batch_size=rows, columns=wanted):
                table = pa.Table.from_batches([batch])
                texts, reasons = _arrow_texts(table.column(self.text_column))
                lines = range(first, first + len(table))
                first += len(table)
                yield InputBatch(
                    self._conform(table.select(kept), where), texts, reasons, _examples(file.name, lines, reasons)
                )
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            raise DataError(where, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None

    def _records(self, file: InputFile, rows: int) -> Iterator[InputBatch]:
        held: list[tuple[Path, int, dict[str, Any]]] = []
        for record in iter_records(file.path, self.data):
            held.append(record)
            if len(held) == rows:
                yield self._record_batch(file, held)
                held = []
        if held:
            yield self._record_batch(file, held)

    def _record_batch(self, file: InputFile, held: list[tuple[Path, int, dict[str, Any]]]) -> InputBatch:
        """Records (of delimited text, spreadsheets, JSON Lines) as an InputBatch; JSON Lines keys a record
        lacks are nulls, keys the first records lacked an error (unless --keep chose the columns)."""
        where = str(held[0][0])
        if self.schema is None:
            seen = list(dict.fromkeys(key for _, _, record in held for key in record))
            kept = self._columns(seen, where)
        else:
            kept = self.schema.names
            if self.keep is None:
                for path, line, record in held:
                    extra = [key for key in record if key not in kept and key != self.text_column]
                    if extra:
                        raise DataError(
                            path,
                            f"a column the first rows lack ({extra[0]!r}): choose the columns to keep with --keep",
                            line=line,
                            field=extra[0],
                        )
        types = None if self.schema is None else {f.name: f.type for f in self.schema}
        arrays = [self._column(name, held, types[name] if types else None, name == self.text_column) for name in kept]
        table = pa.Table.from_arrays(arrays, names=kept)
        texts, reasons = _checked_texts([record.get(self.text_column) for _, _, record in held])
        examples = [
            (_member_name(file, path), line, reason)
            for (path, line, _), reason in zip(held, reasons, strict=True)
            if reason is not None
        ][:EXAMPLES]
        return InputBatch(self._conform(table, where), texts, reasons, examples)

    @staticmethod
    def _column(
        name: str, held: list[tuple[Path, int, dict[str, Any]]], kind: pa.DataType | None, text: bool
    ) -> pa.Array:
        """One kept column of records as Arrow; a value its type cannot hold is a DataError naming its row.
        The text column, kept, is text whatever a row holds (a JSON value as JSON, a lone surrogate escaped)."""
        values = [record.get(name) for _, _, record in held]
        if text:
            return pa.array([_as_text(value) for value in values], pa.string())
        array = _array(values, kind)
        if array is not None:
            return array
        kind_before = kind
        for (path, line, _), value in zip(held, values, strict=True):
            single = _array([value], kind_before)
            if single is None:
                expected = f"the {kind_before} of the rows before" if kind_before else "the type of the rows before"
                raise DataError(
                    path,
                    f"{type(value).__name__} value {str(value)[:40]!r} where the column holds {expected} "
                    "(leave the column out with --keep)",
                    line=line,
                    field=name,
                )
            if kind_before is None and not pa.types.is_null(single.type):
                kind_before = single.type
        raise DataError(held[0][0], "values of different types (leave the column out with --keep)", field=name)


def _array(values: list[Any], kind: pa.DataType | None) -> pa.Array | None:
    """`values` as Arrow of type `kind` (text parsed as a cast parses it), or None when they do not fit."""
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    if kind is None:
        return None
    try:
        return pa.array(values).cast(kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return None
