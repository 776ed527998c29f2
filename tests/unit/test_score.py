"""`textclf score`: the tiny model over small tables, on the local engine; real registry, files and S3 (SeaweedFS)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tasks.lib.config import Params, ScoreConfig, load_params
from tasks.lib.errors import ConfigError, DataError
from tasks.lib.inference.production_model import ModelLoadError, predict
from tasks.lib.scoring.output import SCORE_KEY
from tasks.lib.scoring.run import ScoreRequest, score_table
from tasks.lib.scoring.source import INVISIBLE, NO_TEXT, NOT_UNICODE
from tests.support.repo import REPO
from tests.support.scoring import SMALL, register, sentences


@pytest.fixture
def workspace(make_params, onnx_folder: Path) -> Params:
    params = make_params(SMALL)
    register(params, onnx_folder)
    return params


def cli(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tasks", "--root", str(root), *args], capture_output=True, text=True, timeout=300
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def scored(params: Params, source: Path | str, output: Path | str, **options: Any) -> dict[str, Any]:
    return score_table(params, ScoreRequest(str(source), str(output), progress=False, **options), say=lambda _: None)


def test_every_row_is_answered_as_predict_answers_it_in_order_with_its_columns(workspace: Params, tmp_path: Path):
    texts = sentences(150)
    texts[10] = 'a "quoted", comma\nand a line break'
    rows = [{"id": f"r{i}", "text": text, "note": f"n{i % 7}"} for i, text in enumerate(texts)]
    rows[20]["text"], rows[21]["text"] = "", " \t "
    import csv

    with (tmp_path / "tickets.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["id", "text", "note"])
        writer.writeheader()
        writer.writerows(rows)
    done = cli(workspace.root, "score", "tickets.csv", "scored.parquet")
    assert "150 rows into" in done.stdout and "148 scored" in done.stdout

    table = pq.read_table(tmp_path / "scored.parquet")
    assert table.column_names == [
        "id",
        "text",
        "note",
        "predicted_label",
        "predicted_probability",
        "model_version",
        "model_variant",
        "not_scored",
    ]
    out = table.to_pylist()
    assert [(r["id"], r["text"], r["note"]) for r in out] == [(r["id"], r["text"], r["note"]) for r in rows]
    assert pq.ParquetFile(tmp_path / "scored.parquet").metadata.num_row_groups == 3  # 150 rows of 64
    answered = [r for r in rows if r["text"].strip()]
    printed = cli(workspace.root, "predict", "--json", *[r["text"] for r in answered]).stdout.splitlines()
    expected = {r["id"]: json.loads(line) for r, line in zip(answered, printed, strict=True)}
    for row in out:
        if row["id"] in ("r20", "r21"):
            assert row["predicted_label"] is None and row["predicted_probability"] is None
            assert row["not_scored"] == INVISIBLE
            continue
        want = expected[row["id"]]
        assert row["predicted_label"] == want["label"], row["id"]
        assert row["predicted_probability"] == pytest.approx(want["probabilities"][want["label"]], abs=2e-6)
        assert (row["model_version"], row["model_variant"], row["not_scored"]) == ("v0001", "model", None)

    manifest = json.loads((tmp_path / "scored.parquet.manifest.json").read_text())
    assert (manifest["rows"], manifest["scored"], manifest["not_scored"]) == (150, 148, {INVISIBLE: 2})
    assert [(e["file"], e["line"]) for e in manifest["not_scored_examples"]] == [
        ("tickets.csv", 23),
        ("tickets.csv", 24),
    ]
    assert manifest["input"]["text_column"] == "text" and manifest["model"]["version"] == "v0001"
    recorded = json.loads(pq.read_schema(tmp_path / "scored.parquet").metadata[SCORE_KEY])
    assert recorded == {k: v for k, v in manifest.items() if k != "sha256"}


def test_bad_texts_are_counted_and_answered_null_never_fatal(workspace: Params, tmp_path: Path):
    lines = [
        {"id": 1, "text": "a warm film", "meta": {"lang": "en"}},
        {"id": 2, "text": None},
        {"id": 3},
        {"id": 4, "text": 17},
        {"id": 5, "text": ["a", "list"]},
        {"id": 6, "text": "\u200b\u200d "},
        {"id": 7, "text": "\ud800 broken"},
        {"id": 8, "text": "a cold one"},
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    manifest = scored(workspace, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["id"] for row in out] == list(range(1, 9))
    reasons = [row["not_scored"] for row in out]
    assert reasons == [None, NO_TEXT, NO_TEXT, "not text: a int ('17')", "not text: a list (\"['a', 'list']\")",
                       INVISIBLE, NOT_UNICODE, None]  # fmt: skip
    assert [row["predicted_label"] is None for row in out] == [r is not None for r in reasons]
    assert out[0]["meta"] == {"lang": "en"} and out[1]["meta"] is None
    assert manifest["rows"] == 8 and manifest["scored"] == 2 and sum(manifest["not_scored"].values()) == 6
    assert manifest["not_scored"][NO_TEXT] == 2
    assert [e["line"] for e in manifest["not_scored_examples"]] == [2, 3, 4, 5, 6, 7]


def test_parquet_csv_and_json_lines_hold_the_same_answers_and_parquet_keeps_its_types(
    workspace: Params, tmp_path: Path
):
    texts = sentences(100, seed=5)
    source = pa.table(
        {
            "ticket": pa.array(range(100), pa.int64()),
            "body": texts,
            "amount": pa.array([float("nan") if i == 3 else i / 4 for i in range(100)], pa.float64()),
            "tags": pa.array([["a", str(i)] for i in range(100)], pa.list_(pa.string())),
        }
    )
    pq.write_table(source, tmp_path / "in.parquet", row_group_size=30)
    for suffix in ("parquet", "csv", "jsonl"):
        scored(workspace, tmp_path / "in.parquet", tmp_path / f"out.{suffix}", text_column="body")
    parquet = pq.read_table(tmp_path / "out.parquet")
    assert (
        parquet.schema.field("ticket").type == pa.int64() and parquet.schema.field("tags").type == source["tags"].type
    )
    assert parquet.select(["ticket", "body", "tags"]).equals(source.select(["ticket", "body", "tags"]))
    from pyarrow import csv

    as_csv = csv.read_csv(tmp_path / "out.csv")
    as_json = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    labels = parquet.column("predicted_label").to_pylist()
    assert as_csv.column("predicted_label").to_pylist() == labels == [row["predicted_label"] for row in as_json]
    assert json.loads(as_csv.column("tags")[7].as_py()) == ["a", "7"] and as_json[3]["amount"] is None


def test_a_run_killed_mid_table_resumes_and_writes_the_same_file(make_params, onnx_folder: Path, tmp_path: Path):
    params = make_params({"score": {"window": 32, "row_group_rows": 256, "threads": 1}})
    register(params, onnx_folder)
    pq.write_table(pa.table({"n": range(10000), "text": sentences(10000, seed=9)}), tmp_path / "big.parquet")
    whole = scored(params, tmp_path / "big.parquet", tmp_path / "whole" / "out.parquet")

    (tmp_path / "killed").mkdir()
    command = [sys.executable, "-m", "tasks", "--root", str(tmp_path), "score", "big.parquet", "killed/out.parquet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "killed" / ".out.parquet.parts"
    deadline = time.monotonic() + 120
    while not (parts / "part-000003.parquet").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no row group was stored within 120 s"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stored = sorted(parts.glob("part-*.parquet"))
    assert 4 <= len(stored) < 40 and not (tmp_path / "killed" / "out.parquet").exists()
    stored[-1].write_bytes(stored[-1].read_bytes()[:100])  # a damaged row group is redone, not kept

    done = cli(tmp_path, "score", "big.parquet", "killed/out.parquet")
    assert f"resuming after {len(stored) - 1} row groups" in done.stdout
    assert (tmp_path / "killed" / "out.parquet").read_bytes() == (tmp_path / "whole" / "out.parquet").read_bytes()
    assert json.loads((tmp_path / "killed" / "out.parquet.manifest.json").read_text()) == whole
    assert not parts.exists()


def test_a_finished_output_is_kept_a_new_input_replaces_it_and_a_foreign_file_is_refused(
    workspace: Params, tmp_path: Path
):
    (tmp_path / "in.tsv").write_text("text\tid\n" + "".join(f"{t}\t{i}\n" for i, t in enumerate(sentences(40))))
    first = scored(workspace, "in.tsv", "out.csv")
    said: list[str] = []
    again = score_table(workspace, ScoreRequest("in.tsv", "out.csv", progress=False), say=said.append)
    assert again == first and "nothing to do" in said[0]
    (tmp_path / "in.tsv").write_text("text\tid\n" + "".join(f"{t}\t{i}\n" for i, t in enumerate(sentences(30))))
    assert scored(workspace, "in.tsv", "out.csv")["rows"] == 30
    (tmp_path / "mine.csv").write_text("someone's file\n")
    with pytest.raises(ConfigError, match=r"mine\.csv exists and is not an output of `textclf score`"):
        scored(workspace, "in.tsv", "mine.csv")
    assert scored(workspace, "in.tsv", "mine.csv", resume=False)["rows"] == 30


def test_score_defaults_in_code_are_params_yamls_so_an_older_params_file_loads(tmp_path: Path):
    params = load_params(REPO)
    assert ScoreConfig() == params.score
    older = yaml.safe_load((REPO / "params.yaml").read_text())
    del older["score"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(older))
    assert load_params(tmp_path).score == params.score


def test_bad_input_and_options_are_clear_errors(workspace: Params, tmp_path: Path):
    (tmp_path / "in.csv").write_text("body,label\nfine film,x\n")
    with pytest.raises(DataError, match=r"in\.csv:1: no text column: looked for \['text', 'sentence', 'content'\]"):
        scored(workspace, "in.csv", "out.parquet")
    with pytest.raises(DataError, match=r"--keep names \['id'\], which the file does not have"):
        scored(workspace, "in.csv", "out.parquet", text_column="body", keep=["id"])
    (tmp_path / "clash.csv").write_text("text,predicted_label\nfine film,x\n")
    with pytest.raises(DataError, match="has a column 'predicted_label', which the output adds"):
        scored(workspace, "clash.csv", "out.parquet")
    with pytest.raises(ConfigError, match=r"the output's suffix names its format"):
        scored(workspace, "in.csv", "out.xlsx", text_column="body")
    with pytest.raises(ConfigError, match="--master names a Spark cluster"):
        scored(workspace, "in.csv", "out.parquet", text_column="body", master="local[1]")
    with pytest.raises(ModelLoadError, match="--version v0009"):
        scored(workspace, "in.csv", "out.parquet", text_column="body", version="v0009")
    with pytest.raises(DataError, match="no such file or folder to score"):
        scored(workspace, "missing.csv", "out.parquet")
    (tmp_path / "ragged.csv").write_text("text,id\nfine,1\nnot,fine,2\n")
    with pytest.raises(DataError, match=r"ragged\.csv:3:.*3 fields where the header has 2"):
        scored(workspace, "ragged.csv", "out.parquet")


def test_a_changed_model_file_is_refused(workspace: Params, tmp_path: Path):
    (tmp_path / "in.csv").write_text("text\nfine film\n")
    graph = workspace.path("registry") / "versions" / "v0001" / "model.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match=r"model\.onnx differs from the registered file"):
        scored(workspace, "in.csv", "out.parquet")


def test_a_tagger_scores_the_entities_predict_finds(make_params, tiny_model_dir: Path, tmp_path: Path):
    import shutil

    from transformers import BertForTokenClassification

    from tasks.lib.export.onnx_export import export_onnx
    from tasks.lib.inference.onnx_classifier import ClassifierInfo

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    hf, folder = tmp_path / "hf", tmp_path / "tagger"
    tagger = BertForTokenClassification.from_pretrained(
        tiny_model_dir, num_labels=len(tags), ignore_mismatched_sizes=True
    )
    tagger.save_pretrained(hf)
    folder.mkdir()
    export_onnx(hf, folder / "model.onnx", 17, "token_classification")
    shutil.copy(tiny_model_dir / "tokenizer.json", folder)
    ClassifierInfo(tags, 64, "token_classification").save(folder)
    params = make_params(SMALL)  # what the model is (a tagger) is its folder's classifier.json
    register(params, folder)
    texts = sentences(40, seed=11)
    pq.write_table(pa.table({"text": texts}), tmp_path / "in.parquet")
    scored(params, "in.parquet", "out.parquet")
    out = pq.read_table(tmp_path / "out.parquet")
    assert "predicted_entities" in out.column_names and "predicted_label" not in out.column_names
    expected = predict(texts, params.path("registry"))
    found = out.column("predicted_entities").to_pylist()
    assert sum(map(len, found)) > 0
    for row, reply in zip(found, expected, strict=True):
        assert [(e["start"], e["end"], e["type"], e["text"]) for e in row] == [
            (e.start, e.end, e.type, e.text)
            for e in reply.entities  # type: ignore[union-attr]
        ]


def test_an_object_store_table_scored_into_an_object_store_gives_the_local_bytes(
    workspace: Params, tmp_path: Path, s3_url: str
):
    from tasks.lib.storage.object_store import ObjectStore

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": sentences(150, seed=13), "k": range(150)}), tmp_path / "in" / "part-0.parquet")
    (tmp_path / "in" / "part-1.csv").write_text("text,k\nanother warm film,150\n")
    local = scored(workspace, tmp_path / "in", tmp_path / "scored.parquet", keep=["k"])
    store = ObjectStore(s3_url)
    for name in ("part-0.parquet", "part-1.csv"):
        store.upload(tmp_path / "in" / name, f"in/{name}")
    remote = scored(workspace, f"{s3_url}/in/", f"{s3_url}/out/scored.parquet", keep=["k"])
    assert remote == local and local["rows"] == 151
    assert store.read_bytes("out/scored.parquet") == (tmp_path / "scored.parquet").read_bytes()
    assert store.list("out") == ["scored.parquet", "scored.parquet.manifest.json"]  # the row groups are gone


def test_the_score_flow_scores_and_tells_a_person_when_it_finishes_or_fails(workspace: Params, tmp_path: Path):
    from flows.score import score

    (tmp_path / "in.csv").write_text("text,id\nfine film,1\n,2\n")
    manifest = score(input="in.csv", output="out.parquet", root=str(workspace.root))
    assert (manifest["rows"], manifest["scored"], manifest["model"]["version"]) == (2, 1, "v0001")
    with pytest.raises(DataError, match="no such file or folder to score"):
        score(input="missing.csv", output="other.parquet", root=str(workspace.root))
    sent = [json.loads(line) for line in workspace.path("notifications").read_text().splitlines()]
    assert [note["event"] for note in sent] == ["score.finished", "score.failed"]
    assert "2 rows" in sent[0]["title"] and "missing.csv" in sent[1]["title"] + sent[1]["body"]
