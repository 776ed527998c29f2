"""What the batch jobs (the retraining pipeline, the monitoring flow) tell Prometheus.

See docs/guides/operations.md#metrics-and-alerts.

A job ends before any scrape could find it, so it hands its figures on the two ways Prometheus
takes from batch jobs: pushed to a Pushgateway (`monitor.pushgateway`, prometheus-client's
`push_to_gateway`), and written in the text format as `<paths.monitoring>/<job>.prom`
(`write_to_textfile`), where node_exporter's textfile collector reads it on a single host. The
alerting rules (alerts/textclf.rules.yml) read these series.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from tasks.lib.config import Params
from tasks.lib.monitoring.traffic_monitor import MonitorRun

log = logging.getLogger(__name__)

PIPELINE_JOB = "textclf-pipeline"
MONITOR_JOB = "textclf-monitor"


def pipeline_metrics(promoted: bool, at: float | None = None) -> CollectorRegistry:
    """A retraining run that ended well: when, and whether it promoted a version."""
    registry = CollectorRegistry()
    Gauge(
        "textclf_pipeline_last_success_timestamp_seconds",
        "When the retraining pipeline last ended without a failed stage",
        registry=registry,
    ).set(at or time.time())
    Gauge(
        "textclf_pipeline_last_run_promoted", "1 if the last successful run promoted a version", registry=registry
    ).set(1 if promoted else 0)
    return registry


def monitor_metrics(run: MonitorRun) -> CollectorRegistry:
    """A monitoring run: when, for which version, and each rule's outcome (1 fired, 0 held)."""
    registry = CollectorRegistry()
    Gauge(
        "textclf_monitor_last_run_timestamp_seconds",
        "When the monitoring flow last judged the traffic",
        registry=registry,
    ).set(run.at.timestamp())
    Gauge(
        "textclf_monitor_judged",
        "1 if the last run had enough traffic to judge (monitor.min_window)",
        registry=registry,
    ).set(1 if run.judged else 0)
    fired = Gauge(
        "textclf_monitor_rule_fired",
        "1 if the rule fired in the last monitoring run, 0 if it held",
        ["rule", "policy", "version"],
        registry=registry,
    )
    for finding in run.findings:
        fired.labels(finding.rule, finding.policy, run.version).set(1 if finding.fired else 0)
    return registry


def publish_job_metrics(params: Params, job: str, registry: CollectorRegistry) -> list[str]:
    """Hand a job's metrics on: the textfile always, the Pushgateway when one is set.

    A Pushgateway that cannot be reached is logged, not raised: the job's own work is done and kept.

    Returns:
        Where they went (the file, the gateway's URL).
    """
    folder = Path(params.path("monitoring"))
    folder.mkdir(parents=True, exist_ok=True)
    textfile = folder / f"{job}.prom"
    write_to_textfile(str(textfile), registry)  # atomic: a temporary file renamed
    went = [str(textfile)]
    gateway = params.monitor.pushgateway
    if gateway:
        try:
            push_to_gateway(gateway, job=job, registry=registry, timeout=10)
        except OSError as exc:
            log.warning("metrics of %s not pushed to the Pushgateway %s: %s", job, gateway, exc)
        else:
            went.append(gateway)
    return went
