"""The prediction log: every answer of the served model, written off the request path as Parquet.

A request hands its predictions to `PredictionLog.record`, which only appends to a bounded
queue (never waits: when the queue is full the predictions are dropped and counted). A
background thread writes a file every `flush_rows` predictions or `flush_seconds`, whichever
comes first, and on `close()` (the server's shutdown). Each file is written whole (a folder:
a temporary name, then a rename; object storage: one PUT), so a crash loses at most the
predictions not written yet and never leaves a part of a file. Files are partitioned by day
(`date=YYYY-MM-DD/`), which pyarrow and DuckDB read as a column.

Each row: request id, text index in the request, time, model version and variant, the text's
length and hash (sha256, 16 hex), the predicted label, its probability and all probabilities;
the text itself only with `monitor.log_text` (it may hold personal data). A tagger's row holds
its entities (JSON: start, end, type) and, as its label, the set of their types
(`entity_signature`, what its reference profile holds), with its words' mean confidence and entropy.
A feedback row says whether the service that took it had given that answer (`matched`); live
accuracy joins feedback to the logged answers, so feedback about no answer never counts.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.lib.config import MonitorConfig, PredictionLogConfig
from tasks.lib.data.sentences import entity_signature
from tasks.lib.inference.onnx_tagger import Tagged
from tasks.lib.inference.production_model import Reply
from tasks.lib.io import is_url
from tasks.lib.storage.object_store import ObjectStore, StoreError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
PREDICTIONS, FEEDBACK = "predictions", "feedback"  # the two logs, folders of monitor.location


def log_location(
    config: PredictionLogConfig | MonitorConfig, registry: Path | str, kind: str = PREDICTIONS
) -> Path | str:
    """Where the log of `kind` (predictions, feedback) goes: a folder of that name in monitor.location,
    else beside the registry (a folder, or a prefix of the same bucket)."""
    if config.location is not None:
        base = config.location.rstrip("/")
        return f"{base}/{kind}" if is_url(base) else Path(base) / kind
    if isinstance(registry, str) and is_url(registry):
        return registry.rstrip("/").rsplit("/", 1)[0] + "/" + kind
    return Path(registry).parent / kind


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def entities_json(entities: Sequence[dict[str, Any]]) -> str:
    """Entities as the logs hold them: JSON of their start, end and type (no mention: it is the text)."""
    return json.dumps([{key: e[key] for key in ("start", "end", "type")} for e in entities], separators=(",", ":"))


@dataclass(frozen=True)
class Answer:
    """One /predict answer, as the request path hands it over (cheap: no formatting here)."""

    request_id: str
    at: float  # time.time()
    version: str
    variant: str | None
    texts: Sequence[str]
    replies: Sequence[Reply]

    @property
    def size(self) -> int:
        return len(self.texts)

    def rows(self, log_text: bool) -> list[dict[str, Any]]:
        at = datetime.fromtimestamp(self.at, UTC)
        rows = []
        for index, (text, reply) in enumerate(zip(self.texts, self.replies, strict=True)):
            row: dict[str, Any] = {
                "request_id": self.request_id,
                "index": index,
                "time": at,
                "version": self.version,
                "variant": self.variant,
                "text_chars": len(text),
                "text_hash": text_hash(text),
            }
            if isinstance(reply, Tagged):  # one label per text for the rules: the entity types it holds
                row["label"] = entity_signature(e.type for e in reply.entities)
                row["confidence"], row["entropy"] = reply.confidence, reply.entropy
                row["entities"] = entities_json([e.as_dict() for e in reply.entities])
            else:
                row["label"], row["confidence"] = reply.label, reply.probabilities[reply.label]
                row["probabilities"] = json.dumps(reply.probabilities, separators=(",", ":"))
            if log_text:
                row["text"] = text
            rows.append(row)
        return rows


@dataclass(frozen=True)
class Feedback:
    """The truth about one answered text (`POST /feedback`): its label, or a tagger's entities
    (their signature is the label, see `Answer`)."""

    request_id: str
    index: int
    label: str
    at: float
    version: str | None  # serving when the feedback came
    entities: Sequence[dict[str, Any]] | None = None  # start, end, type in characters of the text
    # Whether the service that took it had given that answer (its recent request ids); False: kept,
    # but it counts only if the prediction log holds the answer (another replica's, or before a restart).
    matched: bool | None = None

    size = 1

    def rows(self, log_text: bool) -> list[dict[str, Any]]:
        at = datetime.fromtimestamp(self.at, UTC)
        row = {
            "request_id": self.request_id,
            "index": self.index,
            "label": self.label,
            "time": at,
            "version": self.version,
        }
        if self.entities is not None:
            row["entities"] = entities_json(self.entities)
        if self.matched is not None:
            row["matched"] = self.matched
        return [row]


Record = Answer | Feedback


class PredictionLog:
    """A bounded queue of records (answers, or feedback) and the thread that writes them as Parquet files."""

    def __init__(self, location: Path | str, config: PredictionLogConfig | MonitorConfig):
        self.store = ObjectStore(location)
        self.config = config
        self._queue: queue.Queue[Record | None] = queue.Queue()
        self._pending = 0  # predictions queued or held, not written yet
        self._lock = threading.Lock()
        self.dropped = 0  # predictions not logged: the queue was full
        self.written = 0
        self.failed_writes = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def record(self, record: Record) -> bool:
        """Queue `record` for writing; False (and counted) when max_pending rows already wait."""
        with self._lock:
            if self._pending + record.size > self.config.max_pending:
                self.dropped += record.size
                return False
            self._pending += record.size
        self._queue.put(record)
        return True

    def close(self, timeout: float = 30) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        held: list[Record] = []
        rows = 0
        deadline = time.monotonic() + self.config.flush_seconds
        while True:
            stop = False
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                if item is None:
                    stop = True
                else:
                    held.append(item)
                    rows += item.size
            except queue.Empty:
                pass
            if stop or rows >= self.config.flush_rows or time.monotonic() >= deadline:
                self._write(held, rows)
                held, rows = [], 0
                deadline = time.monotonic() + self.config.flush_seconds
            if stop:
                return

    def _write(self, records: list[Record], rows: int) -> None:
        if not records:
            return
        try:
            for day, data in self._files(records).items():
                self.store.put(f"date={day}/part-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet", data)
            self.written += rows
        except Exception:  # the log must never take the server down: counted in /metrics, logged here
            self.failed_writes += 1
            log.exception("prediction log: could not write %d predictions to %s", rows, self.store.url)
        finally:
            with self._lock:
                self._pending -= rows

    def _files(self, records: list[Record]) -> dict[str, bytes]:
        """One Parquet file's bytes per day the records fall on."""
        days: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            for row in record.rows(self.config.log_text):
                days.setdefault(row["time"].strftime("%Y-%m-%d"), []).append(row)
        return {day: parquet_bytes(rows) for day, rows in days.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The Arrow type of each column a row may hold (Answer.rows, Feedback.rows).
_COLUMN_TYPES = {
    "request_id": "string",
    "index": "int64",
    "time": "timestamp",
    "version": "string",
    "variant": "string",
    "text_chars": "int64",
    "text_hash": "string",
    "label": "string",
    "confidence": "float64",
    "entropy": "float64",
    "probabilities": "string",
    "entities": "string",
    "text": "string",
    "matched": "bool",
}


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    """`rows` as one Parquet file, with arro3 (Arrow's Rust core): the serving host writes the log
    without pyarrow and pandas (33 MB against 254 MB: docs/getting-started.md#install); pyarrow reads it.

    Raises:
        KeyError: a row holds a column without a type in _COLUMN_TYPES.
    """
    import arro3.io
    from arro3.core import Array, DataType, Table

    names = list(dict.fromkeys(name for row in rows for name in row))
    columns: dict[str, Any] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        kind = _COLUMN_TYPES[name]
        if kind == "timestamp":  # arro3 builds timestamps from their integer microseconds
            micros = [None if v is None else (v - _EPOCH) // timedelta(microseconds=1) for v in values]
            columns[name] = Array(micros, DataType.int64()).cast(DataType.timestamp("us", tz="UTC"))
        else:
            columns[name] = Array(values, getattr(DataType, kind)())
    sink = io.BytesIO()
    arro3.io.write_parquet(Table.from_pydict(columns), sink)
    return sink.getvalue()


def latest_feedback(feedback: pd.DataFrame) -> pd.DataFrame:
    """One row per answered text: the newest label sent for it (a person may correct one)."""
    return feedback.sort_values("time").drop_duplicates(["request_id", "index"], keep="last")


def read_log(location: Path | str) -> pd.DataFrame:
    """Every row of a log (predictions or feedback) as one table, the `date` partition a column; empty if none."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    store = ObjectStore(location)
    try:
        if not store.fs.exists(store.root):
            return pd.DataFrame()
        dataset = ds.dataset(store.root, filesystem=store.fs, format="parquet", partitioning="hive")
        # Files differ in columns (a tagger's rows hold entities, a classifier's probabilities; `text`
        # only with log_text): read them all under the union of their schemas, absent columns null.
        schema = pa.unify_schemas(
            [dataset.schema, *(fragment.physical_schema for fragment in dataset.get_fragments())],
            promote_options="permissive",
        )
        return (
            ds.dataset(store.root, schema=schema, filesystem=store.fs, format="parquet", partitioning="hive")
            .to_table()
            .to_pandas()
        )
    except FileNotFoundError:
        return pd.DataFrame()
    except Exception as exc:  # the store's errors name it: unreachable, denied
        raise StoreError(f"{store.url}: cannot read the log ({type(exc).__name__}: {exc})") from exc
