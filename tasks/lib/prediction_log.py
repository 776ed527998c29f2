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
the text itself only with `monitor.log_text` (it may hold personal data).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.lib.config import MonitorConfig
from tasks.lib.io import is_url
from tasks.lib.object_store import ObjectStore

log = logging.getLogger(__name__)
LOG_FOLDER = "predictions"  # beside the registry when monitor.log_location is null


def log_location(config: MonitorConfig, registry: Path | str) -> Path | str:
    """Where the log goes: monitor.log_location, else a `predictions` folder (or prefix) beside the registry."""
    if config.log_location is not None:
        return config.log_location
    if isinstance(registry, str) and is_url(registry):
        return registry.rstrip("/").rsplit("/", 1)[0] + "/" + LOG_FOLDER
    return Path(registry).parent / LOG_FOLDER


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class Answer:
    """One /predict answer, as the request path hands it over (cheap: no formatting here)."""

    request_id: str
    at: float  # time.time()
    version: str
    variant: str | None
    texts: Sequence[str]
    labels: Sequence[str]
    probabilities: Sequence[dict[str, float]]


class PredictionLog:
    """A bounded queue of answers and the thread that writes them as Parquet files."""

    def __init__(self, location: Path | str, config: MonitorConfig):
        self.store = ObjectStore(location)
        self.config = config
        self._queue: queue.Queue[Answer | None] = queue.Queue()
        self._pending = 0  # predictions queued or held, not written yet
        self._lock = threading.Lock()
        self.dropped = 0  # predictions not logged: the queue was full
        self.written = 0
        self.failed_writes = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def record(self, answer: Answer) -> bool:
        """Queue `answer` for writing; False (and counted) when max_pending predictions already wait."""
        with self._lock:
            if self._pending + len(answer.texts) > self.config.max_pending:
                self.dropped += len(answer.texts)
                return False
            self._pending += len(answer.texts)
        self._queue.put(answer)
        return True

    def close(self, timeout: float = 30) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        held: list[Answer] = []
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
                    rows += len(item.texts)
            except queue.Empty:
                pass
            if stop or rows >= self.config.flush_rows or time.monotonic() >= deadline:
                self._write(held, rows)
                held, rows = [], 0
                deadline = time.monotonic() + self.config.flush_seconds
            if stop:
                return

    def _write(self, answers: list[Answer], rows: int) -> None:
        if not answers:
            return
        try:
            for day, data in self._files(answers).items():
                self.store.put(f"date={day}/part-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:12]}.parquet", data)
            self.written += rows
        except Exception:  # the log must never take the server down: counted in /metrics, logged here
            self.failed_writes += 1
            log.exception("prediction log: could not write %d predictions to %s", rows, self.store.url)
        finally:
            with self._lock:
                self._pending -= rows

    def _files(self, answers: list[Answer]) -> dict[str, bytes]:
        """One Parquet file's bytes per day the answers fall on."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: dict[str, dict[str, list[Any]]] = {}
        for answer in answers:
            at = datetime.fromtimestamp(answer.at, UTC)
            values = columns.setdefault(at.strftime("%Y-%m-%d"), {name: [] for name in self._columns()})
            for index, (text, label, probabilities) in enumerate(
                zip(answer.texts, answer.labels, answer.probabilities, strict=True)
            ):
                values["request_id"].append(answer.request_id)
                values["index"].append(index)
                values["time"].append(at)
                values["version"].append(answer.version)
                values["variant"].append(answer.variant)
                values["text_chars"].append(len(text))
                values["text_hash"].append(text_hash(text))
                values["label"].append(label)
                values["confidence"].append(probabilities[label])
                values["probabilities"].append(json.dumps(probabilities, separators=(",", ":")))
                if self.config.log_text:
                    values["text"].append(text)
        files = {}
        for day, table in columns.items():
            sink = io.BytesIO()
            pq.write_table(pa.table(table), sink)
            files[day] = sink.getvalue()
        return files

    def _columns(self) -> list[str]:
        names = ["request_id", "index", "time", "version", "variant", "text_chars", "text_hash", "label"]
        return [*names, "confidence", "probabilities", *(["text"] if self.config.log_text else [])]
