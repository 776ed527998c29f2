"""Labelled text read into the raw schema: the configured source, a landed file, a folder.

Sources: `demo` (tasks.lib.demo_data), a local file or folder (CSV, TSV, JSONL,
Parquet), or `hf:<dataset id>` (needs network). Every row keeps the file and
line it came from, so later stages can point a person at it; a file that cannot
be read stops with its file, line and (where it applies) column and field.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tasks.lib.columns import LABEL, ROW_ID, SOURCE_FILE, SOURCE_LINE, SPLIT, TEXT
from tasks.lib.config import DataConfig
from tasks.lib.demo_data import generate_reviews
from tasks.lib.errors import PipelineError

SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None, ".parquet": None}
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


class DataError(PipelineError, ValueError):
    """The source cannot be read as a labelled text dataset.

    The message names the file, and where it applies the line, column and field.
    """

    def __init__(
        self,
        file: Path | str,
        message: str,
        line: int | None = None,
        field: str | None = None,
        column: int | None = None,
    ):
        where = str(file) + (f":{line}" if line is not None else "") + (f":{column}" if column is not None else "")
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")
        self.file, self.line, self.column, self.field = str(file), line, column, field


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


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def decode_file(path: Path) -> str:
    """The text of a UTF-8 file; a leading UTF-8 byte-order mark is dropped.

    Raises:
        DataError: empty file, UTF-16/32, bytes that are not UTF-8, NUL characters,
            a byte-order mark mid-file; with the line and column of the first one.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read the file: {exc.strerror}") from None
    for bom, encoding in FOREIGN_BOMS:
        if data.startswith(bom):
            raise DataError(
                path, f"{encoding} byte-order mark: the file is {encoding}-encoded; save it as UTF-8", line=1, column=1
            )
    data = data.removeprefix(codecs.BOM_UTF8)
    if not data.strip():
        raise DataError(path, "empty file: expected a header row or records")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8", errors="replace")
        line, column = _position(before + "?", len(before))
        raise DataError(
            path,
            f"not UTF-8: byte 0x{data[exc.start]:02X} cannot be decoded ({exc.reason}); re-save the file as UTF-8",
            line=line,
            column=column,
        ) from None
    for character, problem in FORBIDDEN_CHARACTERS:
        offset = text.find(character)
        if offset >= 0:
            line, column = _position(text, offset)
            raise DataError(path, problem, line=line, column=column)
    return text


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


def _records_delimited(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number where the row starts, row) from CSV/TSV text with a header row."""
    # TSV is read without quote handling: SST-2 and most TSV exports use quotes
    # as ordinary characters. CSV follows RFC 4180 quoting (fields may span lines).
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    line = 0
    try:
        header = next(reader, [])
        _check_header(path, header, delimiter)
        line = reader.line_num
        for fields in reader:
            if not fields:  # a blank line carries no row
                line = reader.line_num
                continue
            if len(fields) != len(header):
                raise _ragged(path, header, fields, line + 1)
            yield line + 1, dict(zip(header, fields, strict=True))
            line = reader.line_num
    except csv.Error as exc:
        problem = (
            "a quoted field that starts in this row is never closed"
            if "end of data" in str(exc)
            else f"malformed {DELIMITER_NAMES[delimiter]}-separated row: {exc}"
        )
        raise DataError(path, problem, line=line + 1) from None


def _records_jsonl(path: Path, text: str) -> Iterator[tuple[int, dict[str, object]]]:
    for number, line in enumerate(text.split("\n"), start=1):  # JSON Lines ends lines with \n only
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON: {exc.msg}", line=number, column=exc.colno) from None
        except RecursionError:
            raise DataError(path, "not valid JSON: nested too deeply", line=number) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object per line, found {type(record).__name__}", line=number)
        yield number, record


def _records_parquet(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise DataError(path, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    yield from enumerate(frame.to_dict(orient="records"), start=1)


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


def _raw_rows(
    records: Iterable[tuple[int, dict]], config: DataConfig, where: Path, name: str, split: str | None
) -> pd.DataFrame:
    """Turn (line, record) pairs into the raw schema (text, label, split, row id, file, line)."""
    rows: list[dict[str, object]] = []
    text_col = label_col = ""
    for line, record in records:
        if not text_col:
            columns = list(record)
            text_col = _pick_column(columns, config.text_column, where, "text")
            label_col = _pick_column(columns, [config.label_column], where, "label")
        for column in (text_col, label_col):
            if column not in record:
                raise DataError(where, "missing in this row", line=line, field=column)
        rows.append(
            {
                TEXT: _cell(record[text_col], where, line, text_col),
                LABEL: _cell(record[label_col], where, line, label_col),
                SPLIT: split,
                ROW_ID: f"{name}:{line}",
                SOURCE_FILE: str(where),
                SOURCE_LINE: line,
            }
        )
    if not rows:
        raise DataError(where, "no data rows (only a header, or empty)")
    return pd.DataFrame.from_records(rows)


def read_file(path: Path, config: DataConfig, split: str | None = None) -> pd.DataFrame:
    """Read one file into the raw schema.

    Raises:
        DataError: unknown format, bad encoding, wrong delimiter, ragged rows,
            unclosed quotes, missing columns, no rows.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(path, f"unsupported format '{suffix}': use one of {sorted(SUFFIXES)}")
    records: Iterator[tuple[int, dict]]
    if suffix == ".parquet":
        records = _records_parquet(path)
    elif suffix in (".csv", ".tsv"):
        records = _records_delimited(path, decode_file(path), SUFFIXES[suffix] or ",")
    else:
        records = _records_jsonl(path, decode_file(path))
    return _raw_rows(records, config, path, path.name, split)


def read_folder(folder: Path, config: DataConfig) -> pd.DataFrame:
    """Read every supported file in a folder; stems like train/dev/test keep their split."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise DataError(folder, f"no data files ({', '.join(sorted(SUFFIXES))}) in this folder")
    named = [SPLIT_NAMES.get(p.stem.lower()) for p in files]
    if any(named) and not all(named):
        odd = next(p for p, s in zip(files, named, strict=True) if s is None)
        raise DataError(
            odd, f"cannot tell which split this file is: name files {sorted(set(SPLIT_NAMES))}, or none of them"
        )
    return pd.concat([read_file(p, config, split) for p, split in zip(files, named, strict=True)], ignore_index=True)


def read_hub(dataset_id: str, config: DataConfig) -> pd.DataFrame:
    """Load a Hugging Face dataset; fails with a clear message without network."""
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
    frames = [
        _raw_rows(
            enumerate(part.to_pandas().to_dict(orient="records"), start=1),
            config,
            Path(f"{source}[{name}]"),
            name,
            SPLIT_NAMES.get(name.lower(), "train"),
        )
        for name, part in loaded.items()
    ]
    return pd.concat(frames, ignore_index=True)


def read_source(config: DataConfig, root: Path) -> pd.DataFrame:
    """Read `config.source` into the raw schema.

    Args:
        config: the `data` section.
        root: the repo root, against which a relative source path is resolved.
    """
    source = config.source
    if source == "demo":
        if len(config.labels) != 2:
            raise DataError("demo", f"the demo source makes binary data; data.labels has {config.labels}")
        frame = generate_reviews(
            config.demo.rows, config.demo.label_noise, config.demo.seed, (config.labels[0], config.labels[1])
        )
        frame[SPLIT] = None
        frame[ROW_ID] = [f"demo:{i + 1}" for i in range(len(frame))]
        frame[SOURCE_FILE] = "demo"
        frame[SOURCE_LINE] = range(1, len(frame) + 1)
        return frame
    if source.startswith("hf:"):
        return read_hub(source[3:], config)
    path = (Path(source) if Path(source).is_absolute() else root / source).resolve()
    if path.is_dir():
        return read_folder(path, config)
    if path.is_file():
        return read_file(path, config)
    raise DataError(path, "data.source: no such file or folder (use a path, `demo` or `hf:<id>`)")
