"""Stage `ingest`: read the configured source into one raw table.

Sources: `demo` (tasks.demo_data), a local file or folder (CSV, TSV, JSONL,
Parquet), or `hf:<dataset id>` (needs network). Every row keeps the file and
line it came from, so later stages can point a person at it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from tasks.config import DataConfig, Params, PipelineError
from tasks.demo_data import generate_reviews
from tasks.io import LABEL, ROW_ID, SOURCE_FILE, SOURCE_LINE, SPLIT, TEXT, write_table

SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None, ".parquet": None}
# File stems that name a split, so a folder's own split is kept.
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "val", "val": "val",
               "valid": "val", "validation": "val", "test": "test"}


class DataError(PipelineError, ValueError):
    """The source cannot be read as a labelled text dataset.

    The message names the file, and where it applies the line and the field.
    """

    def __init__(self, file: Path | str, message: str, line: int | None = None, field: str | None = None):
        where = str(file) + (f":{line}" if line is not None else "")
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")
        self.file, self.line, self.field = str(file), line, field


def _pick_column(columns: list[str], candidates: list[str], file: Path, role: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise DataError(file, f"no {role} column: looked for {candidates}, the file has {columns}", line=1)


def _records_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) from a CSV/TSV file with a header row."""
    # TSV is read without quote handling: SST-2 and most TSV exports use quotes
    # as ordinary characters. CSV follows RFC 4180 quoting.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(path, "empty file: expected a header row") from None
        line = reader.line_num
        for fields in reader:
            if not fields:  # a blank line carries no row
                line = reader.line_num
                continue
            if len(fields) != len(header):
                raise DataError(path, f"expected {len(header)} fields like the header, found {len(fields)}",
                                line=line + 1)
            yield line + 1, dict(zip(header, fields))
            line = reader.line_num


def _records_jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(path, f"not valid JSON: {exc.msg}", line=number) from None
            if not isinstance(record, dict):
                raise DataError(path, "expected a JSON object per line", line=number)
            yield number, record


def _records_parquet(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    yield from enumerate(pd.read_parquet(path).to_dict(orient="records"), start=1)


def _raw_rows(records: Iterable[tuple[int, dict]], config: DataConfig, where: Path, name: str,
              split: str | None) -> pd.DataFrame:
    """Turn (line, record) pairs into the raw schema (text, label, split, row id, file, line)."""
    rows: list[dict[str, object]] = []
    text_col = label_col = None
    for line, record in records:
        if text_col is None:
            columns = list(record)
            text_col = _pick_column(columns, config.text_column, where, "text")
            label_col = _pick_column(columns, [config.label_column], where, "label")
        if text_col not in record or label_col not in record:
            raise DataError(where, "row lacks the text or label field", line=line)
        text, label = record[text_col], record[label_col]
        rows.append({TEXT: "" if text is None else str(text), LABEL: "" if label is None else str(label),
                     SPLIT: split, ROW_ID: f"{name}:{line}", SOURCE_FILE: str(where), SOURCE_LINE: line})
    if not rows:
        raise DataError(where, "no data rows (only a header, or empty)")
    return pd.DataFrame.from_records(rows)


def read_file(path: Path, config: DataConfig, split: str | None = None) -> pd.DataFrame:
    """Read one file into the raw schema.

    Raises:
        DataError: unknown format, undecodable bytes, ragged rows, missing columns.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(path, f"unsupported format '{suffix}': use one of {sorted(SUFFIXES)}")
    if suffix in (".csv", ".tsv"):
        records: Iterator[tuple[int, dict]] = _records_delimited(path, SUFFIXES[suffix] or ",")
    elif suffix == ".parquet":
        records = _records_parquet(path)
    else:
        records = _records_jsonl(path)
    try:
        return _raw_rows(records, config, path, path.name, split)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 (byte offset {exc.start}): {exc.reason}") from None
    except csv.Error as exc:
        raise DataError(path, f"malformed delimited data: {exc}") from None


def read_folder(folder: Path, config: DataConfig) -> pd.DataFrame:
    """Read every supported file in a folder; stems like train/dev/test keep their split."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise DataError(folder, f"no data files ({', '.join(sorted(SUFFIXES))}) in this folder")
    named = [SPLIT_NAMES.get(p.stem.lower()) for p in files]
    if any(named) and not all(named):
        odd = next(p for p, s in zip(files, named) if s is None)
        raise DataError(odd, f"cannot tell which split this file is: name files {sorted(set(SPLIT_NAMES))}, "
                              "or none of them")
    return pd.concat([read_file(p, config, split) for p, split in zip(files, named)], ignore_index=True)


def read_hub(dataset_id: str, config: DataConfig) -> pd.DataFrame:
    """Load a Hugging Face dataset; fails with a clear message without network."""
    source = f"hf:{dataset_id}"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise DataError(source, "Hugging Face datasets need network access, and HF_HUB_OFFLINE is set. "
                                "Download the dataset where there is network and point data.source at "
                                "the files, or unset HF_HUB_OFFLINE.")
    import datasets  # heavy; only this source needs it

    try:
        loaded = datasets.load_dataset(dataset_id)
    except Exception as exc:  # the hub client raises many unrelated types offline
        raise DataError(source, f"could not load from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
                                "This source needs network access; offline, point data.source at local files.") from None
    frames = [_raw_rows(enumerate(part.to_pandas().to_dict(orient="records"), start=1), config,
                        Path(f"{source}[{name}]"), name, SPLIT_NAMES.get(name.lower(), "train"))
              for name, part in loaded.items()]
    return pd.concat(frames, ignore_index=True)


def ingest(config: DataConfig, root: Path) -> pd.DataFrame:
    """Read `config.source` into the raw schema.

    Args:
        config: the `data` section.
        root: the repo root, against which a relative source path is resolved.
    """
    source = config.source
    if source == "demo":
        if len(config.labels) != 2:
            raise DataError("demo", f"the demo source makes binary data; data.labels has {config.labels}")
        frame = generate_reviews(config.demo.rows, config.demo.label_noise, config.demo.seed,
                                 (config.labels[0], config.labels[1]))
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


def run(params: Params) -> None:
    """Stage entry point: write the raw table to `paths.raw`."""
    frame = ingest(params.data, params.root)
    write_table(params.path("raw"), frame)
    splits = frame[SPLIT].fillna("unsplit").value_counts().to_dict()
    print(f"ingest: {len(frame)} rows from {params.data.source} ({splits})")
