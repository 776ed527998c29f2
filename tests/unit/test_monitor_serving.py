"""The served model watched: request ids, the prediction log, /metrics (`pytest -k monitor`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasks.lib.config import MonitorConfig
from tasks.lib.inference.production_model import Prediction
from tasks.lib.monitoring.prediction_log import FEEDBACK, PREDICTIONS, Answer, PredictionLog, log_location, read_log
from tests.support.repo import repo_params
from tests.support.seaweedfs import free_port
from tests.support.waiting import wait_for
from tests.unit.test_serving import registry  # noqa: F401 - the fixture

MONITOR = {"log": True, "location": None, "log_text": False, "flush_rows": 4, "flush_seconds": 60}


def logged(folder: Path) -> list[dict]:
    """Every row of the prediction log under `folder`, read as one partitioned dataset."""
    if not folder.exists():
        return []
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pylist()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample `name` with these labels in a Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@contextmanager
def serving(params, registry) -> Iterator[str]:  # noqa: F811
    """`textclf serve`'s app with both logs, on a free port, in a thread; the logs are flushed at the end."""
    import uvicorn

    from tasks.apps.http_service import create_app, server_config
    from tasks.lib.inference.production_model import ProductionModel

    logs = [
        PredictionLog(log_location(params.monitor, registry.root, kind), params.monitor)
        for kind in (PREDICTIONS, FEEDBACK)
    ]
    port = free_port()
    server = uvicorn.Server(
        server_config(create_app(ProductionModel(registry.root), params.serve, *logs), params.serve, "127.0.0.1", port)
    )
    server.config.log_level = "warning"
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _up(url), 30)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)  # the lifespan's end flushes the logs


def test_monitor_answers_have_request_ids_and_are_logged_and_counted(make_params, registry):  # noqa: F811
    import httpx

    params = make_params({"serve": {"max_texts": 8, "max_chars": 100}, "monitor": MONITOR})
    location = log_location(params.monitor, params.location("registry"))
    assert location == params.root / "predictions"  # beside the registry
    with serving(params, registry) as url:
        answers = [
            httpx.post(f"{url}/predict", json={"texts": [f"a fine film {i}", "a dull one"]}).json() for i in range(5)
        ]
        assert httpx.post(f"{url}/predict", json={"texts": ["x" * 101]}).status_code == 413
        assert httpx.post(f"{url}/predict", json={"texts": []}).status_code == 422
        exposition = httpx.get(f"{url}/metrics").text

    ids = [answer["request_id"] for answer in answers]
    assert len(set(ids)) == 5 and all(len(i) == 32 for i in ids)
    rows = logged(location)
    assert sorted((row["request_id"], row["index"]) for row in rows) == sorted((i, n) for i in ids for n in (0, 1))
    first = next(row for row in rows if row["request_id"] == ids[0] and row["index"] == 0)
    assert first["version"] == answers[0]["version"] and first["label"] == answers[0]["predictions"][0]["label"]
    assert first["text_chars"] == len("a fine film 0") and len(first["text_hash"]) == 16
    assert "text" not in first  # monitor.log_text is off by default
    assert first["confidence"] == pytest.approx(max(answers[0]["predictions"][0]["probabilities"].values()), abs=1e-6)
    assert len({row["date"] for row in rows}) == 1  # the day partition, read back as a column

    assert metric(exposition, "textclf_requests_total", route="/predict", status="200") == 5
    assert metric(exposition, "textclf_requests_total", route="/predict", status="413") == 1
    assert metric(exposition, "textclf_requests_total", route="/predict", status="422") == 1
    labels = {row["label"] for row in rows}
    assert sum(metric(exposition, "textclf_predictions_total", label=label) for label in labels) == 10
    assert metric(exposition, "textclf_request_seconds_count", route="/predict") == 7
    assert metric(exposition, "textclf_model_info", version=answers[0]["version"]) == 1


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def answer(request_id: str, texts: int) -> Answer:
    return Answer(
        request_id, time.time(), "v0001", "fp32", ["t"] * texts, [Prediction("a", {"a": 0.9, "b": 0.1})] * texts
    )


def test_monitor_a_full_log_queue_drops_and_counts_never_waits(tmp_path):
    defaults = repo_params()["monitor"]
    config = MonitorConfig.model_validate(
        {**defaults, **MONITOR, "flush_rows": 1000, "max_pending": 5, "log_text": True}
    )
    prediction_log = PredictionLog(tmp_path / "log", config)
    assert prediction_log.record(answer("r1", 2)) and prediction_log.record(answer("r2", 2))
    assert not prediction_log.record(answer("r3", 2))  # 6 > 5: not queued, counted
    prediction_log.close()
    rows = logged(tmp_path / "log")
    assert sorted({row["request_id"] for row in rows}) == ["r1", "r2"] and rows[0]["text"] == "t"
    assert (prediction_log.dropped, prediction_log.written) == (2, 4)


KILLED_SERVER_TRAFFIC = 40


def test_monitor_the_log_survives_a_sigkill_mid_traffic(make_params, registry, tmp_path):  # noqa: F811
    import httpx

    make_params({"monitor": {**MONITOR, "flush_rows": 3, "flush_seconds": 0.2}})
    port = free_port()
    command = [sys.executable, "-m", "tasks", "--root", str(tmp_path), "serve", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "predictions"
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _up(url), 60), "the server did not start"
        for i in range(KILLED_SERVER_TRAFFIC):
            assert httpx.post(f"{url}/predict", json={"texts": [f"text {i}"]}, timeout=10).status_code == 200
        assert wait_for(lambda: len(list(folder.rglob("*.parquet"))) >= 2, 10)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        server.kill()
    visible = [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")]
    assert visible and all(f.suffix == ".parquet" for f in visible)  # a write cut short is not visible
    rows = logged(folder)  # every written file reads
    assert 0 < len(rows) <= KILLED_SERVER_TRAFFIC and len({row["request_id"] for row in rows}) == len(rows)


def test_monitor_feedback_is_recorded_and_the_review_queue_leaves_it_out(make_params, registry, capsys):  # noqa: F811
    import httpx

    from tasks.apps.cli import main
    from tasks.lib.data.landing import check_file
    from tasks.lib.monitoring.review_queue import review_queue

    params = make_params({"monitor": {**MONITOR, "log_text": True}})
    texts = [f"review number {i}: a film" for i in range(6)]
    with serving(params, registry) as url:
        first = httpx.post(f"{url}/predict", json={"texts": texts[:3]}).json()
        httpx.post(f"{url}/predict", json={"texts": [*texts[3:], texts[0]]})  # texts[0] answered twice
        given = httpx.post(f"{url}/feedback", json={"request_id": first["request_id"], "index": 1, "label": "positive"})
        assert given.status_code == 202
        wrong = httpx.post(f"{url}/feedback", json={"request_id": first["request_id"], "label": "great"})
        assert wrong.status_code == 422 and "not among those v0001 predicts" in wrong.json()["detail"]
        assert httpx.post(f"{url}/feedback", json={"request_id": "x", "label": "positive"}).status_code == 422
    feedback = read_log(params.root / "feedback")
    assert feedback[["request_id", "index", "label"]].values.tolist() == [[first["request_id"], 1, "positive"]]

    queue = review_queue(params, n=10)
    assert texts[1] not in set(queue["text"])  # labelled already
    assert sorted(queue["text"]) == sorted(set(texts) - {texts[1]})  # one row per text
    assert list(queue["confidence"]) == sorted(queue["confidence"]) and set(queue["label"]) == {""}
    assert main(["--root", str(params.root), "review", "export", "--n", "2", "--out", str(params.root / "r.csv")]) == 0
    assert "2 texts to label" in capsys.readouterr().out
    # Labelled by a person, the file is new data like any other: the landing checks accept it.
    labelled = params.root / "r.csv"
    frame = pd.read_csv(labelled).assign(label="negative")
    frame.to_csv(labelled, index=False)
    assert check_file(labelled, params).reason is None


def test_monitor_review_needs_logged_texts(make_params, registry):  # noqa: F811
    import httpx

    from tasks.lib.monitoring.review_queue import ReviewError, review_queue

    params = make_params({"monitor": MONITOR})  # log_text: false
    with serving(params, registry) as url:
        httpx.post(f"{url}/predict", json={"texts": ["a film"]})
    with pytest.raises(ReviewError, match=r"holds no texts .*monitor\.log_text"):
        review_queue(params, n=5)


def test_monitor_feedback_about_no_answer_is_marked_and_never_counts(make_params, registry):  # noqa: F811
    import httpx

    from tasks.lib.monitoring.traffic_monitor import live_accuracy

    params = make_params({"monitor": {**MONITOR, "min_feedback": 2}})
    unknown = "0" * 32
    with serving(params, registry) as url:
        answered = httpx.post(f"{url}/predict", json={"texts": ["a warm film", "a cold one"]}).json()
        request_id, served = answered["request_id"], answered["predictions"][0]["label"]
        for index, prediction in enumerate(answered["predictions"]):
            given = {"request_id": request_id, "index": index, "label": prediction["label"]}
            known = httpx.post(f"{url}/feedback", json=given)
            assert known.status_code == 202 and known.json()["matched"] is True
        beyond = httpx.post(f"{url}/feedback", json={"request_id": request_id, "index": 2, "label": served})
        assert beyond.status_code == 422 and "that answer had 2 texts" in beyond.json()["detail"]
        other = "positive" if served == "negative" else "negative"
        nothing = httpx.post(f"{url}/feedback", json={"request_id": unknown, "label": other})
        assert nothing.status_code == 202 and nothing.json()["matched"] is False and "note" in nothing.json()
        label = httpx.post(f"{url}/feedback", json={"request_id": request_id, "label": "<i>great</i>"})
        assert label.status_code == 422 and "<i>" not in label.text and "['negative', 'positive']" in label.text
    feedback = read_log(params.root / "feedback")
    assert sorted(feedback["matched"].tolist()) == [False, True, True]
    live = live_accuracy(params, read_log(params.root / "predictions"), None, tagger=False)
    assert live.labelled == 2 and live.accuracy == 1.0  # the feedback about nothing is not counted
