"""Named entities through the whole DAG: the Prefect flow from the offline demo to a promoted tagger,
then `textclf predict --json` and `textclf serve` answering entities with exact character offsets."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.lib.data.sentences import jsonl_sentence
from tasks.lib.inference.onnx_tagger import word_spans
from tests.support.repo import deep_merge, repo_params, run, tiny_overrides
from tests.support.seaweedfs import free_port

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo-entities.yaml"


def raw_text(sentence: str, variant: int) -> str:
    """A test sentence (words joined by spaces) as a person would type it: punctuation attached,
    some runs of spaces, a leading space or a tab, so offsets cannot be counted in words."""
    text = re.sub(r" ([.,;:!?)'])", r"\1", sentence).replace("( ", "(")
    if variant % 3 == 1:
        text = text.replace(" ", "  ", 2)
    if variant % 3 == 2:
        text = "\t " + text + " "
    return text


def spans_of(answer: dict) -> tuple:
    """An answer less its entities' scores."""
    return answer["text"], answer["version"], [(e["start"], e["end"], e["type"], e["text"]) for e in answer["entities"]]


@pytest.mark.slow
def test_a_tagger_is_trained_gated_promoted_and_serves_entities_that_slice_the_text(repo_copy, tiny_model_dir):
    repo = repo_copy
    overrides = deep_merge(
        deep_merge(tiny_overrides(tiny_model_dir), yaml.safe_load(RECIPE.read_text())),
        {
            "data": {"demo": {"rows": 600}},
            "augment": {"synonym": {"ratio": 0.0}, "mentions": {"ratio": 0.2}},
            "train": {"learning_rate": 3e-3, "epochs": 3},
            "gate": {"metrics": {"f1": {"min": 0.5}, "f1.*": {"min": 0.2}}},
            "quantize": {"benchmark": {"latency_rows": 30, "warmup": 2, "rounds": 2}},
            "monitor": {"log_text": True, "flush_seconds": 1, "min_window": 50, "min_feedback": 20},
        },
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))

    done = run([sys.executable, "-m", "tasks", "run"], repo)
    log = done.stdout + done.stderr
    record = json.loads((repo / "registry" / "versions" / "v0001" / "version.json").read_text())
    assert record["metrics"]["gate"]["passed"], log[-3000:]
    assert json.loads((repo / "registry" / "production.json").read_text())["version"] == "v0001"
    assert record["metrics"]["evaluate"]["f1"] > 0.5 and set(record["metrics"]["evaluate"]["per_type"]) == {
        "PER",
        "ORG",
        "LOC",
        "MISC",
    }
    card = (repo / "registry" / "versions" / "v0001" / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "| MISC |" in card
    profile = pd.read_parquet(repo / "registry" / "versions" / "v0001" / "reference.parquet")
    assert profile["label"].str.fullmatch(r"\(none\)|[A-Z+]+").all()

    # 200 raw sentences: every entity's offsets slice its own mention out of the text.
    test = pd.read_parquet(repo / "data" / "splits" / "test.parquet")
    sentences = [raw_text(text, i) for i, text in enumerate((list(test["text"]) * 200)[:200])]
    (repo / "sentences.txt").write_text("\n".join(sentences) + "\n")
    printed = run([sys.executable, "-m", "tasks", "predict", "--json", "--file", "sentences.txt"], repo)
    answers = [json.loads(line) for line in printed.stdout.splitlines()]
    # predict reads a file's lines and drops blank ones: each line is its sentence less its line break.
    assert [a["text"] for a in answers] == [s.rstrip("\n") for s in sentences]
    found = 0
    for answer in answers:
        assert answer["version"] == "v0001"
        for entity in answer["entities"]:
            assert set(entity) == {"start", "end", "type", "score", "text"}
            assert answer["text"][entity["start"] : entity["end"]] == entity["text"] != ""
            assert entity["type"] in {"PER", "ORG", "LOC", "MISC"} and 0.0 < entity["score"] <= 1.0
            found += 1
    assert found >= 200, "the tagger finds the entities of the template sentences"

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tasks", "serve", "--port", str(port)],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import httpx

        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).json()["status"] == "ok":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        health = httpx.get(f"{url}/health", timeout=5).json()
        assert health["labels"] == ["PER", "ORG", "LOC", "MISC"], health
        texts = [answer["text"] for answer in answers]
        served = []
        for start in range(0, len(texts), 50):  # serve.max_texts is 64
            reply = httpx.post(f"{url}/predict", json={"texts": texts[start : start + 50]}, timeout=120)
            assert reply.status_code == 200, reply.text
            assert reply.json()["version"] == "v0001"
            served += reply.json()["predictions"]
        assert [a["text"] for a in served] == texts
        for answer in served:
            assert all(answer["text"][e["start"] : e["end"]] == e["text"] != "" for e in answer["entities"])
        # The same entities, but for a word at a near tie: the server batches texts by other length
        # cuts, and padding moves the tiny model's logits by float noise.
        same = sum(spans_of(a) == spans_of(b) for a, b in zip(served, answers, strict=True))
        assert same >= 0.95 * len(answers), same
        conflict = httpx.post(f"{url}/predict", json={"texts": ["Paris"], "labels": ["negative", "positive"]})
        assert conflict.status_code == 409 and conflict.json()["labels"] == ["PER", "ORG", "LOC", "MISC"]
        counted = httpx.get(f"{url}/metrics", timeout=5).text
        assert re.search(r'textclf_entities_total\{type="PER",version="v0001"\} \d+', counted)

        # Feedback: the true entities of 30 answered texts; every third loses its first entity (a miss).
        ids = [reply.json()["request_id"]]  # the last request: its 50 texts
        last = served[-50:]
        truth = [a["entities"][1:] if i % 3 == 0 else a["entities"] for i, a in enumerate(last[:30])]
        for index, entities in enumerate(truth):
            sent = httpx.post(f"{url}/feedback", json={"request_id": ids[0], "index": index, "entities": entities})
            assert sent.status_code == 202, sent.text
        refused = {
            "a label": {"label": "PER"},
            "an unknown type": {"entities": [{"start": 0, "end": 2, "type": "DATE"}]},
            "overlapping": {"entities": [{"start": 0, "end": 5, "type": "PER"}, {"start": 3, "end": 8, "type": "PER"}]},
        }
        for why, body in refused.items():
            answered = httpx.post(f"{url}/feedback", json={"request_id": ids[0], "index": 40, **body})
            assert answered.status_code == 422, (why, answered.text)
    finally:
        server.terminate()
        server.wait(timeout=30)

    # The served answers are in the prediction log, a row per text with its entities; the monitoring
    # run judges the window against the tagger's reference profile and scores the feedback.
    logged = pd.concat(pd.read_parquet(f) for f in (repo / "registry").parent.glob("predictions/date=*/*.parquet"))
    assert len(logged) == len(texts) and logged["entities"].notna().all()  # the 409 answered nothing
    row = logged[(logged["request_id"] == ids[0]) & (logged["index"] == 0)].iloc[0]
    assert json.loads(row["entities"]) == [{k: e[k] for k in ("start", "end", "type")} for e in last[0]["entities"]]
    run([sys.executable, "-m", "tasks", "monitor", "--hours", "1"], repo)
    report = json.loads((repo / "reports" / "monitoring" / "latest" / "monitor.json").read_text())
    assert report["judged"] and {f["rule"] for f in report["findings"]} >= {"label_drift", "confidence_shift"}
    found = sum(len(a["entities"]) for a in last[:30])
    missed = sum(1 for i, a in enumerate(last[:30]) if i % 3 == 0 and a["entities"])
    live = report["live_accuracy"]
    assert live["metric"] == "entity F1" and live["labelled"] == 30
    assert live["accuracy"] == pytest.approx(2 * (found - missed) / (found + found - missed))
    assert live["low"] <= live["accuracy"] <= live["high"]

    # The review queue and the feedback export are JSON Lines of words and tags, as landing reads them.
    printed = run([sys.executable, "-m", "tasks", "review", "export", "--n", "20"], repo).stdout
    queued = [json.loads(line) for line in (repo / "review.jsonl").read_text().splitlines()]
    assert "correct its tags" in printed and len(queued) == 20
    for number, queued_text in enumerate(queued, start=1):
        assert queued_text["tokens"] == [queued_text["text"][a:b] for a, b in word_spans(queued_text["text"])]
        assert jsonl_sentence(repo / "review.jsonl", queued_text, number).tags == queued_text["tags"]
    run([sys.executable, "-m", "tasks", "feedback", "export"], repo)
    (exported,) = (repo / "landing").glob("feedback-*.jsonl")
    labelled = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(labelled) == 30
    for sentence, entities in zip(labelled, truth, strict=True):
        assert sum(tag.startswith("B-") for tag in sentence["tags"]) == len(entities)

    # Retrained on another seed: the gate scores it beside production v0001, paired by sentence.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    changed = {"train": {"seed": 7}, "gate": {"metrics": {"f1": {"change": {"min": -0.5}}}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, changed)))
    run([sys.executable, "-m", "tasks", "run"], repo)
    verdict = json.loads((repo / "metrics" / "gate.json").read_text())
    assert verdict["production_version"] == "v0001" and verdict["passed"]
    change = next(rule for rule in verdict["rules"] if rule["name"] == "f1 change")
    low, high = change["interval"]
    assert low <= verdict["overall"]["f1"]["change"] <= high
    assert verdict["overall"]["f1"]["production"] == pytest.approx(
        record["metrics"]["gate"]["overall"]["f1"]["candidate"]
    )
    assert json.loads((repo / "registry" / "production.json").read_text())["version"] == "v0002"
