"""`textclf score INPUT OUTPUT` (and deployment `score`): a registered version over a whole table.

The input is read a batch at a time by a thread ahead of the model (tasks.lib.scoring.source),
cut into row groups of `score.row_group_rows` rows, each answered a window at a time
(tasks.lib.scoring.answers) here or on Spark's executors (tasks.lib.scoring.spark_engine), and
stored as soon as it is answered by another thread (tasks.lib.scoring.output); memory holds a
few row groups whatever the table's size. A run's key is what its answers depend on (the
input's fingerprint, the version, the settings): a rerun with the same key keeps the row groups
a killed run stored, or, when the output is finished, does nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
from pydantic import ValidationError

from tasks.lib.config import Params, ScoreConfig
from tasks.lib.data.batches import read_ahead
from tasks.lib.errors import ConfigError, DataError
from tasks.lib.inference.production_model import served_labels
from tasks.lib.scoring.answers import Part, answered, output_schema
from tasks.lib.scoring.model import PRODUCTION, ScoringModel, load_scoring_model, resolve_version
from tasks.lib.scoring.output import ScoredOutput
from tasks.lib.scoring.source import EXAMPLES, InputBatch, TableReader, opened_source
from tasks.lib.storage.registry import Registry

Engine = Literal["local", "spark"]


@dataclass(frozen=True)
class ScoreRequest:
    """What to score and how; None: the setting of params.yaml `score:` (or `data.text_column`)."""

    input: str
    output: str
    version: str = PRODUCTION
    registry: str | None = None
    text_column: str | None = None
    keep: list[str] | None = None
    engine: Engine | None = None
    master: str | None = None
    batch_size: int | None = None
    window: int | None = None
    variant: str | None = None
    resume: bool = True
    progress: bool = True


@dataclass
class _Run:
    """One run's fixed facts, shared by its steps."""

    key: str
    settings: ScoreConfig
    model: ScoringModel
    variant: str
    schema: pa.Schema
    output: ScoredOutput
    records: list[dict[str, Any]] = field(default_factory=list)


def score_settings(params: Params, request: ScoreRequest) -> ScoreConfig:
    """params.yaml `score:` with the request's options over it. A --window that does not divide
    score.row_group_rows rounds the row groups to whole windows.

    Raises:
        ConfigError: an option out of range, or --master without the Spark engine.
    """
    values = params.score.model_dump()
    given = {"engine": request.engine, "batch_size": request.batch_size, "window": request.window}
    values.update({key: value for key, value in {**given, "variant": request.variant}.items() if value is not None})
    if request.window is not None and values["row_group_rows"] % request.window:
        values["row_group_rows"] = max(1, values["row_group_rows"] // request.window) * request.window
    try:
        settings = ScoreConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"textclf score options over params.yaml score: {exc}") from None
    if request.master is not None and settings.engine != "spark":
        raise ConfigError("--master names a Spark cluster: it goes with --engine spark (or score.engine: spark)")
    return settings


def run_key(identity: dict[str, Any]) -> str:
    """A run's key: the SHA-256 of what its answers depend on."""
    return "sha256:" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def parts_of(batches: Iterator[InputBatch], rows: int) -> Iterator[Part]:
    """The input's batches cut into row groups of `rows` rows (the last may be shorter), in order."""
    held: list[InputBatch] = []
    count, index = 0, 0
    for batch in batches:
        held.append(batch)
        count += len(batch.texts)
        while count >= rows:
            part, held = _take(held, rows, index)
            count -= rows
            index += 1
            yield part
    if count:
        yield _take(held, count, index)[0]


def _take(held: list[InputBatch], rows: int, index: int) -> tuple[Part, list[InputBatch]]:
    """The first `rows` rows of `held` as part `index`, and the batches that remain."""
    tables, texts, reasons, examples = [], [], [], []
    left, rest = rows, []
    for batch in held:
        if left == 0:
            rest.append(batch)
            continue
        size = len(batch.texts)
        if size <= left:
            taken, left = batch, left - size
        else:
            taken = InputBatch(batch.kept.slice(0, left), batch.texts[:left], batch.reasons[:left])
            remains = InputBatch(batch.kept.slice(left), batch.texts[left:], batch.reasons[left:])
            # An example belongs to the part its row is in; the batch's are in row order, so split by count.
            before = sum(r is not None for r in batch.reasons[:left])
            taken.examples, remains.examples = batch.examples[:before], batch.examples[before:]
            rest.append(remains)
            left = 0
        tables.append(taken.kept)
        texts += taken.texts
        reasons += taken.reasons
        examples += taken.examples
    kept = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
    return Part(index, kept, texts, reasons, examples[:EXAMPLES]), rest


def _progress(total: int | None, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc="score", unit=" rows", unit_scale=True, disable=not enabled, smoothing=0.1
    )


def score_table(params: Params, request: ScoreRequest, say: Callable[[str], object] = print) -> dict[str, Any]:
    """Score `request.input` into `request.output` with a registered version; returns the output's manifest.

    Raises:
        DataError: the input cannot be read (file, line and field named); no rows.
        ConfigError: a bad option, or an OUTPUT this command did not write.
        ModelLoadError: no such version, or its files differ from the registered ones.
    """
    settings = score_settings(params, request)
    registry = Registry(params.with_registry(request.registry).location("registry"))
    version = resolve_version(registry, request.version)
    output = ScoredOutput(request.output, params.root)
    with opened_source(request.input, params.root) as source:
        identity = {
            "input": source.fingerprint,
            "version": version,
            "text_column": request.text_column or list(params.data.text_column),
            "keep": request.keep,
            **settings.model_dump(include={"variant", "batch_size", "window", "row_group_rows", "engine"}),
        }
        key = run_key(identity)
        finished = output.finished(key) if request.resume else None
        if finished is not None:
            say(f"{output.location} is already this input scored by {version} (its manifest says so): nothing to do")
            return finished
        state = _state_to_resume(output, key, request.resume, say)
        model = load_scoring_model(registry, version, state["variant"] if state else settings.variant, settings.threads)
        if state is None:
            state = {"run_key": key, "variant": model.choice.variant, "chosen_by": model.choice.by}
            output.start(state)
        reader = TableReader(source, params.data, request.text_column, request.keep)
        parts = read_ahead(parts_of(reader.batches(), settings.row_group_rows))
        first = next(parts, None)
        if first is None or reader.schema is None:
            raise DataError(source.location, "no rows to score")
        schema = output_schema(reader.schema, model.tagger, source.location)
        run = _Run(key, settings, model, state["variant"], schema, output)
        run.records = output.done_parts(key, schema, settings.row_group_rows)
        resumed = sum(record["rows"] for record in run.records)
        if run.records:
            say(f"resuming after {len(run.records)} row groups ({resumed} rows) of {output.location}")
        todo = (part for part in itertools.chain([first], parts) if part.index >= len(run.records))
        started = time.perf_counter()
        with _progress(source.rows, resumed, request.progress) as bar:
            _answer(run, todo, params, request.master, bar.update)
        seconds = time.perf_counter() - started
        manifest = _manifest(run, source.fingerprint, [f.record() for f in source.files], reader.text_column, request)
        finished = output.finish(schema, len(run.records), manifest)
    say(_summary(finished, output.location, manifest["rows"] - resumed, seconds))
    return finished


def _state_to_resume(
    output: ScoredOutput, key: str, resume: bool, say: Callable[[str], object]
) -> dict[str, Any] | None:
    """The state of this run's earlier attempt (its row groups are kept), or None: start afresh.

    Raises:
        ConfigError: OUTPUT holds a file `textclf score` did not write (unless `resume` is off).
    """
    state = output.state() if resume else None
    if state is not None and state.get("run_key") != key:
        say(f"note: {output.parts} holds row groups of a run with another input, version or settings: starting over")
        state = None
    if state is None and resume and output.exists() and output.manifest() is None:
        raise ConfigError(
            f"{output.location} exists and is not an output of `textclf score` (it has no "
            f"{output.name}.manifest.json): remove it, choose another OUTPUT, or give --no-resume to replace it"
        )
    return state


def _answer(
    run: _Run, parts: Iterator[Part], params: Params, master: str | None, advance: Callable[[int], object]
) -> None:
    """Every row group of `parts` answered, on the run's engine, and stored."""
    if run.settings.engine == "local":
        _score_here(run, parts, advance)
        return
    from tasks.lib.scoring.spark_engine import score_on_spark

    spark = params.validate_.spark
    for part, table in score_on_spark(run.model, parts, run.schema, run.settings, master or spark.master, spark.conf):
        run.records.append(run.output.put_part(part, table, run.key))
        advance(len(table))


def _summary(manifest: dict[str, Any], location: str, this_run: int, seconds: float) -> str:
    """One line for people: rows, version and variant, rows not scored by reason, speed."""
    model, skipped = manifest["model"], manifest["not_scored"]
    why = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
    return (
        f"{manifest['rows']} rows into {location} by {model['version']} ({model['variant']}): "
        f"{manifest['scored']} scored" + (f", not scored: {why}" if why else "") + f"; {this_run} rows in this run"
        f" ({this_run / max(seconds, 1e-9):.0f} rows/s); manifest {location}.manifest.json"
    )


def _score_here(run: _Run, parts: Iterator[Part], advance: Callable[[int], object]) -> None:
    """The local engine: each row group answered here while a thread stores the one before."""
    settings = run.settings
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-writer") as pool:
        pending: Future[dict[str, Any]] | None = None
        for part in parts:
            table = answered(
                run.model.model, part, run.schema, run.model.version, run.variant, settings.window, settings.batch_size
            )
            if pending is not None:
                run.records.append(pending.result())
            pending = pool.submit(run.output.put_part, part, table, run.key)
            advance(len(table))
        if pending is not None:
            run.records.append(pending.result())


def _manifest(
    run: _Run, fingerprint: str, files: list[dict[str, Any]], text_column: str, request: ScoreRequest
) -> dict[str, Any]:
    """What a finished output records: its run, input, version, settings and row counts (no time, no host)."""
    not_scored: dict[str, int] = {}
    examples: list[list[Any]] = []
    for record in run.records:
        for reason, count in record["not_scored"].items():
            not_scored[reason] = not_scored.get(reason, 0) + count
        examples += record["examples"]
    rows = sum(record["rows"] for record in run.records)
    settings = run.settings
    return {
        "run_key": run.key,
        "input": {"fingerprint": fingerprint, "files": files, "text_column": text_column},
        "model": {
            "version": run.model.version,
            "variant": run.variant,
            "labels": served_labels(run.model.model),
            "task": "token_classification" if run.model.tagger else "sequence_classification",
        },
        "settings": {
            **settings.model_dump(include={"variant", "batch_size", "window", "row_group_rows", "engine"}),
            "keep": request.keep,
        },
        "output": {"name": run.output.name, "format": run.output.format[1:], "columns": run.schema.names},
        "row_groups": len(run.records),
        "rows": rows,
        "scored": rows - sum(not_scored.values()),
        "not_scored": dict(sorted(not_scored.items())),
        "not_scored_examples": [
            {"file": file, "line": line, "reason": reason} for file, line, reason in examples[:EXAMPLES]
        ],
    }
