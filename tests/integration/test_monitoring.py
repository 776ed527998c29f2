"""The monitoring loop end to end (`pytest -k monitor`): a real `textclf serve`, real traffic, the monitoring
flow on the real Prefect engine, feedback, the review queue, the feedback export, and the HTML report in
a real browser.

The served model is the tiny random one, registered with a reference profile of the demo data (the
profile the `reference` stage builds). Traffic: 1,000 requests from held-out demo rows, then 1,000 from
SST-2's dev file (872 sentences, cycled): longer sentences of another domain and vocabulary.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.data.demo_data import generate_reviews
from tasks.lib.inference.onnx_classifier import OnnxClassifier
from tasks.lib.monitoring.prediction_log import PREDICTIONS, log_location, read_log
from tasks.lib.monitoring.reference_profile import REFERENCE_FILE, build_profile, write_profile
from tasks.lib.storage.registry import Registry
from tests.integration.test_reports_offline import CHARTS_DRAWN, Visit, browser, screenshots  # noqa: F401
from tests.support.seaweedfs import free_port

pytestmark = pytest.mark.slow

SST2_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2" / "dev.tsv"
LABELS = ["negative", "positive"]


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def send(url: str, texts: list[str]) -> list[str]:
    """One /predict request per text; the request ids."""
    return [post(f"{url}/predict", {"texts": [text]})["request_id"] for text in texts]


def wait_up(url: str, server: subprocess.Popen[str]) -> None:
    """Until /health answers 200; fails with the server's output if it exits first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, f"textclf serve exited: {server.stdout.read() if server.stdout else ''}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("textclf serve did not answer /health within 120 s")


def wait_logged(params: Any, rows: int) -> None:
    """Until the prediction log holds `rows` rows (the server flushes every second here)."""
    location = log_location(params.monitor, params.location("registry"), PREDICTIONS)
    deadline = time.monotonic() + 60
    while len(read_log(location)) < rows:
        assert time.monotonic() < deadline, f"the prediction log did not reach {rows} rows"
        time.sleep(0.5)


def monitor(root: Path, since: datetime) -> dict[str, Any]:
    """`textclf monitor` over the traffic since `since`; the run's monitor.json."""
    done = subprocess.run(
        [sys.executable, "-m", "tasks", "--root", str(root), "monitor", "--since", since.isoformat()],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((root / "reports" / "monitoring" / "latest" / "monitor.json").read_text())


@pytest.fixture
def workspace(make_params, tmp_path: Path, onnx_folder: Path, tiny_model_dir: Path) -> Path:
    """A workspace whose registry serves the tiny model, registered with a reference profile of demo data."""
    params = make_params(
        {
            "train": {"base_model": str(tiny_model_dir)},
            "monitor": {
                "log_text": True,
                "flush_rows": 200,
                "flush_seconds": 1,
                "min_window": 200,
                "min_feedback": 100,
            },
        }
    )
    demo = generate_reviews(3500, label_noise=0.0, seed=7, labels=tuple(LABELS))
    demo.iloc[2500:].to_parquet(tmp_path / "served_demo.parquet")
    model = tmp_path / "model"
    shutil.copytree(onnx_folder, model)
    profile = build_profile(demo.iloc[:2000], demo.iloc[2000:2500], model, "model.onnx", str(tiny_model_dir))
    write_profile(profile, model / REFERENCE_FILE, str(tiny_model_dir))
    test = demo.iloc[2000:2500]
    predicted = OnnxClassifier(model, "model.onnx").predict(list(test[TEXT]))
    accuracy = float((pd.Series(predicted, index=test.index) == test[LABEL]).mean())
    registry = Registry(params.path("registry"))
    record = {
        "model_md5": "tiny",
        "labels": LABELS,
        "metrics": {"gate": {"overall": {"accuracy": {"candidate": accuracy}}}},
    }
    registry.set_production(registry.register(model, record), "test")
    return tmp_path


def test_monitor_flags_the_shifted_window_and_closes_the_loop(workspace: Path, browser, screenshots) -> None:  # noqa: F811
    from tasks.lib.config import load_params

    params = load_params(workspace)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tasks", "--root", str(workspace), "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, server)
        # 1. In-domain traffic: nothing fires.
        started = datetime.now(UTC)
        send(url, list(pd.read_parquet(workspace / "served_demo.parquet")[TEXT]))
        wait_logged(params, 1000)
        quiet = monitor(workspace, started)
        print("demo window:", {f["rule"]: f["value"] for f in quiet["findings"]})
        assert quiet["judged"] and quiet["predictions"] == 1000
        assert [f["rule"] for f in quiet["findings"] if f["fired"]] == []
        # 2. SST-2 dev: another domain; 300 of its texts get their true label.
        shifted_at = datetime.now(UTC)
        sst2 = pd.read_csv(SST2_DEV, sep="\t", quoting=3)
        rows = pd.concat([sst2, sst2]).iloc[:1000]
        ids = send(url, list(rows["content"]))
        for request_id, label in zip(ids[:300], rows["label"].iloc[:300], strict=True):
            post(f"{url}/feedback", {"request_id": request_id, "label": LABELS[int(label)]})
        wait_logged(params, 2000)
        time.sleep(2)  # the feedback log's flush
        shifted = monitor(workspace, shifted_at)
    finally:
        server.terminate()
        server.wait(30)
    fired = {f["rule"] for f in shifted["findings"] if f["fired"]}
    print("rules fired on SST-2 dev:", {f["rule"]: f["value"] for f in shifted["findings"]})
    assert shifted["predictions"] == 1000
    assert {"length_drift", "embedding_drift"} <= fired
    live = shifted["live_accuracy"]
    assert live["labelled"] == 300 and live["low"] <= live["accuracy"] <= live["high"]
    print(f"live accuracy {live['accuracy']:.3f} [{live['low']:.3f}, {live['high']:.3f}]")
    # A notification line names the rules that fired.
    notifications = [json.loads(line) for line in (workspace / "logs" / "notifications.jsonl").read_text().splitlines()]
    assert [n["event"] for n in notifications] == ["monitor.drift"]
    assert all(rule in notifications[0]["title"] for rule in fired)
    # The review queue: drifted texts and the least confident answers, without the labelled ones.
    out = workspace / "review.csv"
    cli = [sys.executable, "-m", "tasks", "--root", str(workspace)]
    subprocess.run([*cli, "review", "export", "--n", "100", "--out", str(out)], check=True, capture_output=True)
    queue = pd.read_csv(out)
    assert len(queue) == 100 and queue["text"].is_unique
    drifted = queue[queue["reason"].str.startswith("drifted region")]
    least = queue[queue["reason"] == "least confident"]
    assert len(drifted) == 50 and len(least) == 50
    assert not set(queue["request_id"]) & set(ids[:300])
    answers = read_log(log_location(params.monitor, params.location("registry"), PREDICTIONS))
    unchosen = answers[~answers["text"].isin(queue["text"]) & ~answers["request_id"].isin(ids[:300])]
    assert least["confidence"].max() <= unchosen["confidence"].min()
    # The feedback as new labelled data in the landing folder, once.
    subprocess.run([*cli, "feedback", "export"], check=True, capture_output=True)
    exported = list((workspace / "landing").glob("feedback-*.csv"))
    assert len(exported) == 1
    labelled = pd.read_csv(exported[0])
    assert len(labelled) == 300 and set(labelled["label"]) <= set(LABELS)
    again = subprocess.run([*cli, "feedback", "export"], check=True, capture_output=True, text=True)
    assert "no feedback since the last export" in again.stdout
    # The report renders offline: every chart drawn, no request leaves the machine, no console error.
    report = workspace / "reports" / "monitoring" / "latest" / "index.html"
    charts = report.read_text().count('<div id="chart')
    assert charts == 5  # length, labels, confidence, embeddings, live accuracy
    visit = Visit(browser)
    drawn = {"Vega drew every chart": f"{CHARTS_DRAWN} === {charts}"}
    problems = visit.open(report, drawn, screenshots / "monitoring-report.png", ready=f"{CHARTS_DRAWN} >= {charts}")
    visit.context.close()
    assert problems == []
    assert datetime.fromisoformat(shifted["window_start"]) < datetime.now(UTC)
