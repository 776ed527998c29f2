"""The row rules on Apache Spark (`validate.engine: spark`).

The executors read the raw table, add the derived columns with the pandas engine's own code
(`add_features` in `mapInPandas`: the same tokenizer, the same language test, the same
group findings, which the driver computed from the whole table's keys and broadcasts), and
Great Expectations' Spark execution engine runs the same row suite on the whole table. What
comes back to the driver is, per rule, the ids of the rows it flagged; the driver then
writes reasons, quarantine records and accepted rows as the pandas engine does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.lib.columns import ROW_ID
from tasks.lib.config import DataConfig, SparkConfig
from tasks.lib.data.spark_session import spark_session
from tasks.lib.errors import PipelineError
from tasks.lib.validation.features import DERIVED, TAG_DERIVED, TOKENS, TokenCounter, add_features
from tasks.lib.validation.suite import Rule, Validator, flagged_keys


def session(config: SparkConfig) -> Any:
    """The Spark session `validate.spark` describes (one per process: Spark reuses it)."""
    return spark_session(config.master, config.conf, "textclf-validate", "validate.engine is spark")


def flagged_on_spark(
    validator: Validator,
    rules: list[Rule],
    url: str,
    expected_rows: int,
    findings: pd.DataFrame,
    counter: TokenCounter,
    data: DataConfig,
    config: SparkConfig,
    entity_types: list[str] | None = None,
) -> dict[str, set[str]]:
    """Per row rule, the ids of the rows it flags, judged on Spark.

    Args:
        url: the raw table where the executors read it (a path or a Hadoop filesystem URL).
        expected_rows: the rows of paths.raw, which the table at `url` must hold.
        findings: the group and label-noise columns of the rows that have one, indexed by row id.
        counter: the token counter (pickled to the executors).
        entity_types: token classification's entity types (its tag rules' columns are derived too).
    """
    from pyspark import StorageLevel
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    spark = session(config)
    raw = spark.read.parquet(url)
    rows = raw.count()
    if rows != expected_rows:
        raise PipelineError(
            f"validate.spark.raw_url {url}: {rows} rows where paths.raw has {expected_rows}; "
            "it must be a copy of paths.raw (copy it again after ingest)"
        )
    columns = [*DERIVED, *(TAG_DERIVED if entity_types is not None else [])]
    derived = [StructField(name, DoubleType() if name == TOKENS else StringType()) for name in columns]
    schema = StructType([*raw.schema.fields, *derived])
    shared = spark.sparkContext.broadcast(findings)
    label_map = dict(data.label_map)

    def featured(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        found = shared.value
        for batch in batches:
            columns = {
                name: [value if isinstance(value, str) else None for value in found[name].reindex(batch[ROW_ID])]
                for name in found.columns
            }
            yield add_features(batch, label_map, counter, columns, entity_types)

    # Kept on the executors (memory, then disk): the suite's expectations each read the table.
    judged = raw.mapInPandas(featured, schema).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        results = validator.suite("rows", rules, key=ROW_ID, engine="spark")(judged)
    finally:
        judged.unpersist()
        shared.destroy()
    return {rule.name: set(flagged_keys(results[rule.name])) for rule in rules}


def raw_url(config: SparkConfig, raw: Path) -> str:
    """Where the executors read the raw table: validate.spark.raw_url, or paths.raw itself."""
    return config.raw_url or raw.resolve().as_uri()
