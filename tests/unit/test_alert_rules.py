"""The alerting rules (alerts/textclf.rules.yml): valid for Prometheus, each alert raised by the series that
should raise it (promtool's unit tests), and every series they read is one the project publishes."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tasks.apps.serving_metrics import ServiceMetrics
from tasks.lib.monitoring.job_metrics import monitor_metrics, pipeline_metrics
from tasks.lib.monitoring.traffic_monitor import Finding, LiveAccuracy, MonitorRun
from tests.support.repo import REPO

ALERTS = REPO / "alerts"
RULES = ALERTS / "textclf.rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("no promtool: `make test` installs Debian's prometheus (apt-get install prometheus)")
    return subprocess.run([tool, *args], cwd=ALERTS, capture_output=True, text=True, timeout=120, check=False)


def test_the_rules_are_valid_and_each_alert_fires_on_its_series():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "textclf.rules.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    tests = yaml.safe_load((ALERTS / "textclf.rules.test.yml").read_text())["tests"]
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == alerts  # every alert has a case where it fires


def _names(registry: CollectorRegistry) -> set[str]:
    """The series names a registry publishes (a counter's as `_total`, a histogram's `_bucket`...)."""
    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_series_the_rules_read_is_published():
    state = {"version": "v0001", "variant": "onnx", "degraded": True, "fallback_for": "v0002", "created": 1.0}
    service = ServiceMetrics(lambda: state)
    service.answered("/predict", 200, 0.01)
    run = MonitorRun(
        at=datetime.now(UTC),
        version="v0001",
        window_start=datetime.now(UTC),
        window_end=datetime.now(UTC),
        predictions=300,
        judged=True,
        findings=[Finding(rule="length_drift", statistic="ks", value=0.3, threshold=0.15, policy="notify", fired=True)],
        live_accuracy=LiveAccuracy(labelled=0, confidence=0.95, test_accuracy=0.9),
    )
    published = _names(service.registry) | _names(monitor_metrics(run)) | _names(pipeline_metrics(promoted=True))
    read = set(re.findall(r"\btextclf_\w+", RULES.read_text()))
    assert read and read <= published, read - published
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= published
