"""`textclf score --engine spark`: the row groups answered by Spark's executors, with ONNX Runtime there.

The driver reads the input and writes the output as the local engine does (the same row groups,
the same parts, the same resume); what it hands Spark is the work. Each row group travels as
one row of a DataFrame (its index, and its rows as Arrow IPC bytes), so a Spark task answers
exactly one row group, cut into the same windows as the local engine's: the executors'
answers are the local engine's, and every kept column keeps its Arrow type (no round trip
through Spark's types). `mapInPandas` runs the answering function on the executors; they load
the model once per Python worker from the version's folder, which `SparkContext.addFile` ships
once per executor and which is checked there, file by file, against the SHA-256 hashes of its
version record (and that record against the driver's) before it is loaded.

On a cluster (`--master spark://...`, yarn, k8s) the executors need this project's environment
(the worker image, or `spark.pyspark.python` in validate.spark.conf naming one).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from tasks.lib.artifacts import VERSION_FILE
from tasks.lib.config import ScoreConfig
from tasks.lib.data.spark_session import spark_session
from tasks.lib.inference.production_model import ModelLoadError, Served, load_served, warmed_up
from tasks.lib.io import file_digest
from tasks.lib.scoring.answers import Part, answered
from tasks.lib.scoring.model import ScoringModel
from tasks.lib.storage.registry import RegistryError, verify_files

# A row group's columns beside the kept ones while it travels: its texts and the reasons.
_TEXT, _REASON = "__textclf_text", "__textclf_reason"
_PAYLOAD_SCHEMA = "part long, payload binary"
# Models loaded in this Python worker (an executor's), by shipped folder and graph: loaded once.
_LOADED: dict[tuple[str, str], Served] = {}


@dataclass(frozen=True)
class ShippedModel:
    """What an executor needs to load the model: the shipped folder's name, its graph, the record's hash."""

    folder: str
    graph_file: str
    record_sha256: str
    version: str
    variant: str
    threads: int
    schema: pa.Schema
    window: int
    batch_size: int


def _ship(spark: Any, model: ScoringModel) -> str:
    """Ship the version's folder to every executor (once per Spark application); returns its name there.

    The name holds the record's hash: a folder of that name is that version, whichever registry it came from.
    """
    name = f"textclf-{model.version}-{model.record_sha256[:16]}"
    context = spark.sparkContext
    if any(uri.rstrip("/").endswith(f"/{name}") for uri in context.listFiles):
        return name
    staged = Path(tempfile.gettempdir()) / "textclf-spark-models" / name
    if not (staged / VERSION_FILE).is_file():
        partial = staged.with_name(f".{name}.{os.getpid()}.tmp")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(model.folder, partial)
        shutil.rmtree(staged, ignore_errors=True)
        os.replace(partial, staged)
    context.addFile(str(staged), recursive=True)
    return name


def _executor_model(shipped: ShippedModel) -> Served:
    """The shipped model in this Python worker: checked and loaded the first time, then kept."""
    key = (shipped.folder, shipped.graph_file)
    if key not in _LOADED:
        from pyspark import SparkFiles

        folder = Path(SparkFiles.get(shipped.folder))
        if file_digest(folder / VERSION_FILE, "sha256") != shipped.record_sha256:
            raise ModelLoadError(f"{folder / VERSION_FILE}: differs from the record the driver loaded")
        try:
            verify_files(folder)
        except RegistryError as exc:
            raise ModelLoadError(str(exc)) from None
        _LOADED[key] = warmed_up(load_served(folder, shipped.threads, False, shipped.graph_file))
    return _LOADED[key]


def to_payload(part: Part) -> bytes:
    """A row group as Arrow IPC bytes: its kept columns, its texts and the reasons."""
    table = part.kept.append_column(_TEXT, pa.array(part.texts, pa.string()))
    return _table_bytes(table.append_column(_REASON, pa.array(part.reasons, pa.string())))


def from_payload(index: int, payload: bytes) -> Part:
    table = pa.ipc.open_stream(payload).read_all()
    kept = table.drop_columns([_TEXT, _REASON])
    return Part(index, kept, table.column(_TEXT).to_pylist(), table.column(_REASON).to_pylist())


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def answer_payloads(batches: Iterator[pd.DataFrame], shipped: ShippedModel) -> Iterator[pd.DataFrame]:
    """mapInPandas' function, on the executors: each row group's answers, as Arrow IPC bytes."""
    model = _executor_model(shipped)
    for frame in batches:
        answers = []
        for index, payload in zip(frame["part"], frame["payload"], strict=True):
            part = from_payload(int(index), bytes(payload))
            table = answered(
                model, part, shipped.schema, shipped.version, shipped.variant, shipped.window, shipped.batch_size
            )
            answers.append(_table_bytes(table))
        yield pd.DataFrame({"part": frame["part"], "payload": answers})


def score_on_spark(
    model: ScoringModel,
    parts: Iterator[Part],
    schema: pa.Schema,
    settings: ScoreConfig,
    master: str,
    conf: dict[str, str],
) -> Iterator[tuple[Part, pa.Table]]:
    """Each row group with its answers, in order, answered by Spark's executors, as many at a time as they
    have cores."""
    spark = spark_session(master, conf, "textclf-score", "--engine spark")
    shipped = ShippedModel(
        _ship(spark, model),
        model.graph_file,
        model.record_sha256,
        model.version,
        model.choice.variant,
        settings.threads or 1,  # a Spark task has one core
        schema,
        settings.window,
        settings.batch_size,
    )
    slots = max(1, int(spark.sparkContext.defaultParallelism))
    answer = functools.partial(answer_payloads, shipped=shipped)
    while True:
        group = [part for _, part in zip(range(slots), parts, strict=False)]
        if not group:
            return
        frame = pd.DataFrame({"part": [p.index for p in group], "payload": [to_payload(p) for p in group]})
        # One row group per partition: Spark's tasks each answer one, and collect() keeps their order.
        rows = spark.createDataFrame(frame, _PAYLOAD_SCHEMA)
        answered_rows = rows.mapInPandas(answer, _PAYLOAD_SCHEMA).collect()
        by_index = {int(row["part"]): bytes(row["payload"]) for row in answered_rows}
        for part in group:
            yield part, pa.ipc.open_stream(by_index[part.index]).read_all()
