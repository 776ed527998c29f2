"""A real Prometheus (Debian's) scrapes a real `textclf serve` and a real Pushgateway, evaluates
alerts/textclf.rules.yml, and raises the alerts: a monitoring rule that fired (pushed as the monitoring
flow pushes it) and a model made degraded (a damaged production pointer)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.lib.monitoring.job_metrics import MONITOR_JOB, monitor_metrics, publish_job_metrics
from tasks.lib.monitoring.traffic_monitor import Finding, LiveAccuracy, MonitorRun
from tasks.lib.storage.registry import Registry
from tests.support.repo import REPO
from tests.support.seaweedfs import free_port

pytestmark = pytest.mark.slow


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"no {name}: `make test` installs Debian's prometheus and prometheus-pushgateway")
    return found


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def _until(condition: Callable[[], Any], seconds: float, what: str, log: Path | None = None) -> Any:
    """`condition()` once it is truthy (connection errors count as not yet); fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = condition()
        except OSError:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not within {seconds:.0f} s" + (f"\n{log.read_text()[-3000:]}" if log else "")
            )
        time.sleep(0.5)


class Processes:
    """Servers started for the test, each logging to its own file; all stopped at the end."""

    def __init__(self, folder: Path):
        self.folder, self.started = folder, []

    def start(self, name: str, command: list[str], **options: Any) -> Path:
        log = self.folder / f"{name}.log"
        with log.open("w") as out:
            self.started.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **options))
        return log

    def stop(self) -> None:
        for process in self.started:
            process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop()


def firing(prometheus: str, alert: str) -> list[dict[str, Any]]:
    alerts = _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def test_prometheus_scrapes_the_service_and_raises_the_alerts(tmp_path, onnx_folder, make_params, processes):
    registry = Registry(tmp_path / "registry")
    registry.set_production(registry.register(onnx_folder, {"model_md5": "m1"}), "first")
    serve_port, gateway_port, prometheus_port = free_port(), free_port(), free_port()
    serve = [sys.executable, "-m", "tasks", "serve", "--registry", str(registry.root), "--port", str(serve_port)]
    serve_log = processes.start("serve", serve, cwd=tmp_path)
    gateway = f"http://127.0.0.1:{gateway_port}"
    gateway_log = processes.start(
        "pushgateway", [_binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{gateway_port}"]
    )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(REPO / "alerts" / "textclf.rules.yml")],
        "scrape_configs": [
            {"job_name": "textclf", "static_configs": [{"targets": [f"127.0.0.1:{serve_port}"]}]},
            # honor_labels: the pushed series keep their own `job` (the Pushgateway's documented setting)
            {"job_name": "pushgateway", "honor_labels": True, "static_configs": [{"targets": [gateway[7:]]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    prometheus_log = processes.start(
        "prometheus",
        [
            _binary("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
    )

    def query(expression: str) -> list[dict[str, Any]]:
        return _get(f"{prometheus}/api/v1/query?query={urllib.parse.quote(expression)}")["data"]["result"]

    # Both targets are scraped; the service's own series and the process collector's are there.
    _until(lambda: len(query("up == 1")) == 2, 90, "both targets up", prometheus_log)
    assert {r["metric"]["job"] for r in query("up == 1")} == {"textclf", "pushgateway"}, gateway_log.read_text()
    assert query('textclf_model_degraded{job="textclf"} == 0'), serve_log.read_text()[-3000:]
    assert query('process_resident_memory_bytes{job="textclf"} > 0') and query('python_info{job="textclf"}')
    assert query("textclf_model_registered_timestamp_seconds > 0")

    # The monitoring flow's figures, pushed as it pushes them: a notify rule that fired raises an alert.
    params = make_params({"monitor": {"pushgateway": gateway}, "paths": {"monitoring": str(tmp_path / "monitoring")}})
    now = datetime.now(UTC)
    findings = [
        Finding(rule="length_drift", statistic="ks", value=0.4, threshold=0.15, policy="notify", fired=True),
        Finding(rule="label_drift", statistic="linf", value=0.01, threshold=0.1, policy="notify", fired=False),
    ]
    run = MonitorRun(
        at=now,
        version="v0001",
        window_start=now,
        window_end=now,
        predictions=500,
        judged=True,
        findings=findings,
        live_accuracy=LiveAccuracy(labelled=0, confidence=0.95, test_accuracy=None),
    )
    went = publish_job_metrics(params, MONITOR_JOB, monitor_metrics(run))
    assert went == [str(tmp_path / "monitoring" / f"{MONITOR_JOB}.prom"), gateway]
    (drift,) = _until(lambda: firing(prometheus, "TextclfMonitorRuleFired"), 60, "the monitoring alert")
    assert drift["labels"] | {"alertname": "-"} == {
        "alertname": "-",
        "rule": "length_drift",
        "version": "v0001",
        "severity": "warning",
    }

    # The production pointer is damaged: the service keeps serving v0001, degraded, and after the
    # rule's minute the alert fires.
    assert not firing(prometheus, "TextclfModelDegraded")
    registry.pointer.write_text('{"version": "../../etc"}')
    _until(lambda: query("textclf_model_degraded == 1"), 30, "textclf_model_degraded", serve_log)
    degraded_at = time.monotonic()
    (alert,) = _until(lambda: firing(prometheus, "TextclfModelDegraded"), 150, "the degraded alert", prometheus_log)
    assert alert["labels"]["instance"] == f"127.0.0.1:{serve_port}" and alert["labels"]["severity"] == "page"
    print(f"\nTextclfModelDegraded fired {time.monotonic() - degraded_at:.0f} s after the model was degraded")
    # Nothing else is wrong: no other serving alert fires.
    names = {a["labels"]["alertname"] for a in _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]}
    assert names == {"TextclfMonitorRuleFired", "TextclfModelDegraded"}
