"""Where `textclf score` writes, and how a killed run goes on.

OUTPUT is a local path or an object-store URL; its suffix names the format (.parquet, .csv,
.jsonl). Each row group is stored as soon as it is answered, as one Parquet object under
`.<name>.parts/` beside OUTPUT, written whole (a local file beside and renamed, one PUT in an
object store), so a killed run leaves whole row groups or none. A rerun of the same run (its
key: the input's fingerprint, the version and the settings) checks the row groups there
(readable, in order, of this run, with the output's schema and a full row group's rows) and
goes on after the last good one. When every row is answered the row groups become OUTPUT (a
Parquet row group each, or their rows as CSV or JSON Lines), written beside and moved into
place (an object store gets it in one upload), then its manifest `<name>.manifest.json`, then
the parts go. Nothing in either depends on the time or the host, so the same input and version
give the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.lib.errors import ConfigError, PipelineError
from tasks.lib.io import atomic_path, file_digest, is_url
from tasks.lib.scoring.answers import Part
from tasks.lib.storage.object_store import ObjectStore, StoreError

FORMATS = (".parquet", ".csv", ".jsonl")
MANIFEST = ".manifest.json"
STATE = "state.json"
# Parquet key-value metadata: a row group's own record (in its part), the manifest (in OUTPUT).
PART_KEY = b"textclf.part"
SCORE_KEY = b"textclf.score"


def output_format(output: str) -> str:
    """The format OUTPUT's suffix names.

    Raises:
        ConfigError: not .parquet, .csv or .jsonl.
    """
    suffix = PurePosixPath(output).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{output}: the output's suffix names its format: {', '.join(FORMATS)}")
    return suffix


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")


class ScoredOutput:
    """OUTPUT, its manifest and the row groups of a run in progress, in a folder or an object store."""

    def __init__(self, output: str, root: Path):
        self.format = output_format(output)
        if is_url(output):
            parent, _, self.name = output.rstrip("/").rpartition("/")
            self.local: Path | None = None
            self.location = output
        else:
            path = Path(output) if Path(output).is_absolute() else root / output
            parent, self.name, self.local = str(path.parent), path.name, path
            self.location = str(path)
        self.store = ObjectStore(parent)
        self.parts = f".{self.name}.parts"

    def _read_json(self, key: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.store.read_bytes(key))
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # torn or foreign: as good as absent
        return data

    def manifest(self) -> dict[str, Any] | None:
        """The manifest of a finished output, or None."""
        return self._read_json(self.name + MANIFEST)

    def exists(self) -> bool:
        return self.store.exists(self.name)

    def _sha256(self) -> str:
        import hashlib

        with self.store.fs.open(self.store.path(self.name), "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    def finished(self, run_key: str) -> dict[str, Any] | None:
        """The manifest when OUTPUT is this run's, finished and unchanged since (its SHA-256); else None."""
        manifest = self.manifest()
        if manifest is None or manifest.get("run_key") != run_key or not self.exists():
            return None
        return manifest if manifest.get("sha256") == self._sha256() else None

    # The run in progress

    def state(self) -> dict[str, Any] | None:
        """What the run in progress recorded when it started (its key, the variant it chose), or None."""
        return self._read_json(f"{self.parts}/{STATE}")

    def start(self, state: dict[str, Any]) -> None:
        """Forget any earlier run's row groups and record this run's state."""
        self.store.delete(self.parts)
        self.store.put(f"{self.parts}/{STATE}", _json(state))

    def discard(self) -> None:
        self.store.delete(self.parts)

    def _part(self, index: int) -> str:
        return f"{self.parts}/part-{index:06d}.parquet"

    def done_parts(self, run_key: str, schema: pa.Schema, row_group_rows: int) -> list[dict[str, Any]]:
        """The records of the row groups a killed run left that this one keeps: from the first, each
        readable, its own index, of this run, with `schema` and a full row group's rows (the last may
        be shorter: the table ended there); the first that is not ends them (it and those after are redone)."""
        kept: list[dict[str, Any]] = []
        while True:
            record = self._part_record(len(kept), run_key, schema)
            if record is None:
                return kept
            kept.append(record)
            if record["rows"] != row_group_rows:
                return kept

    def _part_record(self, index: int, run_key: str, schema: pa.Schema) -> dict[str, Any] | None:
        key = self._part(index)
        try:
            if not self.store.exists(key):
                return None
            with self.store.fs.open(self.store.path(key), "rb") as handle:
                metadata = pq.read_metadata(handle)
            record: dict[str, Any] = json.loads((metadata.metadata or {})[PART_KEY])
            same = metadata.schema.to_arrow_schema().remove_metadata().equals(schema)
        except (StoreError, OSError, KeyError, ValueError, pa.ArrowException):
            return None  # damaged or foreign: redone
        if record.get("index") != index or record.get("run") != run_key or record.get("rows") != metadata.num_rows:
            return None
        return record if same else None

    def put_part(self, part: Part, table: pa.Table, run_key: str) -> dict[str, Any]:
        """Store an answered row group whole, with its record (index, run, rows, rows not scored); returns it."""
        record = {
            "index": part.index,
            "run": run_key,
            "rows": len(table),
            "not_scored": part.not_scored(),
            "examples": [list(example) for example in part.examples],
        }
        sink = pa.BufferOutputStream()
        # Not compressed: a part lives until OUTPUT is written, and the CPU is the model's.
        table = table.replace_schema_metadata({PART_KEY: _json(record)})
        pq.write_table(table, sink, row_group_size=max(1, len(table)), compression="none")
        self.store.put(self._part(part.index), sink.getvalue().to_pybytes())
        return record

    def _read_part(self, index: int) -> pa.Table:
        try:
            return pq.read_table(pa.BufferReader(self.store.read_bytes(self._part(index))))
        except (FileNotFoundError, pa.ArrowException) as exc:
            raise PipelineError(
                f"{self.store.url}/{self._part(index)}: a row group of this run is missing or damaged ({exc}); "
                "score again to redo it"
            ) from None

    # The finished output

    def finish(self, schema: pa.Schema, row_groups: int, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write OUTPUT from the stored row groups, then its manifest (with OUTPUT's SHA-256), then drop the parts."""
        with self._sink() as path:
            if self.format == ".parquet":
                self._write_parquet(path, schema, row_groups, manifest)
            elif self.format == ".csv":
                self._write_csv(path, schema, row_groups)
            else:
                self._write_jsonl(path, row_groups)
            digest = file_digest(path, "sha256")
        full = {**manifest, "sha256": digest}
        self.store.put(self.name + MANIFEST, json.dumps(full, indent=2, sort_keys=True, ensure_ascii=False).encode())
        self.discard()
        return full

    @contextlib.contextmanager
    def _sink(self) -> Iterator[Path]:
        """A local file that becomes OUTPUT when the block ends well (renamed into place, or uploaded whole)."""
        if self.local is not None:
            with atomic_path(self.local) as temporary:
                yield temporary
            return
        with tempfile.TemporaryDirectory(prefix="textclf-score-output-") as folder:
            path = Path(folder) / self.name
            yield path
            self.store.upload(path, self.name)

    def _write_parquet(self, path: Path, schema: pa.Schema, row_groups: int, manifest: dict[str, Any]) -> None:
        with pq.ParquetWriter(path, schema.with_metadata({SCORE_KEY: _json(manifest)})) as writer:
            for index in range(row_groups):
                table = self._read_part(index)
                writer.write_table(table, row_group_size=max(1, len(table)))

    def _write_csv(self, path: Path, schema: pa.Schema, row_groups: int) -> None:
        from pyarrow import csv

        flat = pa.schema([pa.field(f.name, pa.string()) if _nested(f.type) else f for f in schema])
        with csv.CSVWriter(path, flat) as writer:
            for index in range(row_groups):
                writer.write_table(_flattened(self._read_part(index), flat))

    def _write_jsonl(self, path: Path, row_groups: int) -> None:
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            for index in range(row_groups):
                for row in _finite(self._read_part(index)).to_pylist():
                    handle.write(json.dumps(row, ensure_ascii=False, default=_json_value) + "\n")


def _nested(kind: pa.DataType) -> bool:
    return bool(pa.types.is_nested(kind))


def _flattened(table: pa.Table, flat: pa.Schema) -> pa.Table:
    """Nested columns (a tagger's entities, lists or structs kept from Parquet) as JSON text, for CSV."""
    columns = []
    for column in table.columns:
        if _nested(column.type):
            values = [
                None if v is None else json.dumps(v, ensure_ascii=False, default=_json_value)
                for v in column.to_pylist()
            ]
            columns.append(pa.array(values, pa.string()))
        else:
            columns.append(column)
    return pa.Table.from_arrays(columns, schema=flat)


def _finite(table: pa.Table) -> pa.Table:
    """NaN and infinities of float columns as nulls: JSON has neither."""
    columns = []
    for column in table.columns:
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def _json_value(value: Any) -> Any:
    """A value JSON has no type for: dates and times in ISO form, bytes as hex, the rest as text."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
