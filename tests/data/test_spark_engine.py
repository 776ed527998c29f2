"""validate.engine: spark: the same suite on Apache Spark (local mode) decides as the pandas engine did.

Each corpus case runs its validate stage on Spark and is compared with what the pandas engine
recorded in tests/data/verdicts.json (verdicts, per-rule counts and values, flagged row ids,
reasons, accepted rows). `make spark` installs pyspark and Java 17; `make test` runs these.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.lib.errors import PipelineError
from tests.data.corpus import NER_CASES, csv_bytes, good_rows
from tests.data.verdicts import CORPUS_BASE, RECORD, _configure, _validate, corpus_verdicts, differences

pytestmark = pytest.mark.spark
# Two local cores: the CI machine's.
SPARK = {"validate": {"engine": "spark", "spark": {"master": "local[2]"}}}


def test_spark_engine_gives_the_recorded_verdicts_on_every_corpus_case(tmp_path: Path):
    recorded = json.loads(RECORD.read_text())
    now = dict(corpus_verdicts(tmp_path, SPARK))
    assert len(now) >= 40
    found = differences({name: recorded[name] for name in now}, now)
    assert not found, "\n".join(found)


def test_spark_engine_judges_tagged_sentences_as_the_pandas_engine_does(tmp_path: Path):
    """Every token-classification corpus case the reader accepts, with the project's policies (tag
    rules, IOB repair, entity shares): the same fingerprint on both engines. (One policy set: the
    strict one flags the same rows, and each Spark run costs seconds of job scheduling.)"""
    compared = 0
    for case in NER_CASES:
        if case.read_error:
            continue
        found = {}
        for engine, overrides in (("pandas", {}), ("spark", SPARK)):
            workspace = tmp_path / f"{case.id}-{engine}"
            for name, content in case.files.items():
                (workspace / name).parent.mkdir(parents=True, exist_ok=True)
                (workspace / name).write_bytes(content)
            source = {"data": {"source": case.source}}
            found[engine] = _validate(_configure(workspace, CORPUS_BASE, source, case.overrides, overrides))
        assert found["spark"] == found["pandas"], case.id
        assert not found["pandas"]["passed"] or found["pandas"]["rows_quarantined"] + found["pandas"]["rows_warned"]
        compared += 1
    assert compared >= 8


def test_a_raw_url_holding_other_rows_is_refused(tmp_path: Path):
    from tasks.stages import ingest, validate

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "good.csv").write_bytes(csv_bytes(good_rows(150)))
    other = _configure(elsewhere, CORPUS_BASE)
    ingest.run(other)
    (tmp_path / "good.csv").write_bytes(csv_bytes(good_rows()))
    params = _configure(tmp_path, CORPUS_BASE, SPARK, {"validate": {"spark": {"raw_url": str(other.path("raw"))}}})
    ingest.run(params)
    with pytest.raises(PipelineError, match=r"150 rows where paths.raw has 200"):
        validate.run(params)
    assert not params.path("validated").exists()  # nothing accepted
