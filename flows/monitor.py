"""The monitoring flow: the served model's recent traffic against its reference profile, on monitor.cron.

Deployment `monitor` in prefect.yaml (`textclf service` serves it beside the retraining
deployments); `textclf monitor` runs it once. Each run writes a report folder under
paths.monitoring (tasks.lib.monitoring.monitor_report), a Prefect artifact with the rules, and, when a
rule whose policy is `notify` fires, a notification (paths.notifications, retrain.notify_block).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tasks.lib.config import load_params
from tasks.lib.monitoring.job_metrics import MONITOR_JOB, monitor_metrics, publish_job_metrics
from tasks.lib.monitoring.monitor_report import REPORT_FILE, write_report
from tasks.lib.monitoring.traffic_monitor import MonitorRun, monitor_traffic, nothing_to_monitor
from tasks.lib.reporting.notify import notify

MONITOR_FLOW = "textclf-monitor"


@flow(name=MONITOR_FLOW, log_prints=True)
def monitor(
    root: str = ".", window_hours: float | None = None, since: datetime | None = None, registry: str | None = None
) -> MonitorRun | None:
    """Judge the production version's traffic since `since`, else of the last `window_hours`
    (default monitor.window_hours).

    `registry` stands for paths.registry (a serving host's --registry).

    Returns:
        The run's record (also written as monitor.json in its report folder), or None when no version is
        production yet: nothing is served, so the run is skipped with its reason, not failed (a new team's
        hourly deployment would otherwise fail every hour until the first promotion).
    """
    params = load_params(Path(root).resolve()).with_registry(registry)
    waiting = nothing_to_monitor(params)
    if waiting is not None:
        create_markdown_artifact(key="monitoring-report", markdown=waiting + "\n", description="Monitoring skipped")
        get_run_logger().info(waiting)
        return None
    run, compared = monitor_traffic(params, window_hours, since)
    folder = write_report(params.path("monitoring"), run, compared)
    report = folder / REPORT_FILE
    create_markdown_artifact(
        key="monitoring-report",
        markdown=run.markdown() + f"\nReport: {report}\n",
        description=f"Monitoring of {run.version}: every rule, its value and threshold",
    )
    to_notify = [f.rule for f in run.fired if f.policy == "notify"]
    if to_notify:
        notify(params, "monitor.drift", f"monitoring {run.version}: {', '.join(to_notify)} fired", run.markdown())
    went = publish_job_metrics(params, MONITOR_JOB, monitor_metrics(run))
    get_run_logger().info("%s (report: %s; metrics: %s)", run.summary(), report, ", ".join(went))
    return run
