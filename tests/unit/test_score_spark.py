"""`textclf score --engine spark`: Spark's executors (local mode) answer every row as the local engine does."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.lib.scoring.run import ScoreRequest, score_table
from tests.support.scoring import SMALL, register, sentences

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_spark_engine_answers_every_row_as_the_local_engine_does(make_params, onnx_folder: Path, tmp_path: Path):
    params = make_params({**SMALL, "validate": {"spark": {"master": "local[2]"}}})
    register(params, onnx_folder)
    texts = sentences(700, seed=17)
    texts[5], texts[640] = "", None  # type: ignore[call-overload]
    table = pa.table(
        {
            "id": pa.array(range(700), pa.int32()),
            "text": texts,
            "at": pa.array([i * 86400 for i in range(700)], pa.date64()),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=250)
    manifests = {}
    for engine in ("local", "spark"):
        request = ScoreRequest("in.parquet", f"{engine}/out.parquet", engine=engine, progress=False)  # type: ignore[arg-type]
        manifests[engine] = score_table(params, request, say=lambda _: None)
    local, spark = (pq.read_table(tmp_path / engine / "out.parquet") for engine in ("local", "spark"))
    assert spark.schema.equals(local.schema)  # the kept columns keep their Arrow types on Spark too
    probability = "predicted_probability"
    assert spark.drop_columns([probability]).equals(local.drop_columns([probability]))
    assert spark.column(probability).to_pylist() == pytest.approx(local.column(probability).to_pylist(), abs=2e-6)
    assert spark.column("not_scored").null_count == 698 and manifests["spark"]["row_groups"] == 11
    assert {k: v for k, v in manifests["spark"].items() if k not in ("run_key", "settings", "sha256")} == {
        k: v for k, v in manifests["local"].items() if k not in ("run_key", "settings", "sha256")
    }
    assert json.loads((tmp_path / "spark" / "out.parquet.manifest.json").read_text())["settings"]["engine"] == "spark"
