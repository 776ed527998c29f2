"""`GET /metrics` of `textclf serve`: Prometheus counters and histograms (prometheus-client).

Requests by route and status (every answer, the guard's 413/429/408 included), the time to
each answer, texts classified by predicted label and model version, the version and variant
serving (degraded, or a rollback target standing in for production) and when it was registered,
the batcher's queue, the prediction log's counts, and the process's own (CPU, memory, files, GC).
One registry per app, so that several apps in one process (tests) do not share counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

ROUTES = ("/predict", "/health", "/metrics", "/feedback")
# Seconds: the served model answers in milliseconds; the tail up to the request timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StateCollector(Collector):
    """Values read at scrape time: the model serving, the queue, the prediction log."""

    def __init__(self, state: Callable[[], dict[str, Any]]):
        self.state = state

    def collect(self) -> Iterator[Any]:
        state = self.state()
        info = GaugeMetricFamily(
            "textclf_model_info", "1 for the model version and variant serving", labels=["version", "variant"]
        )
        if state.get("version"):
            info.add_metric([str(state["version"]), str(state.get("variant") or "")], 1)
        yield info
        yield GaugeMetricFamily(
            "textclf_model_degraded",
            "1 while the newest production pointer cannot be served (/health says why)",
            value=1 if state.get("degraded") else 0,
        )
        fallback = GaugeMetricFamily(
            "textclf_model_fallback",
            "1 while a rollback target serves in place of a production version whose files do not verify",
            labels=["production", "serving"],
        )
        if state.get("fallback_for"):
            fallback.add_metric([str(state["fallback_for"]), str(state.get("version") or "")], 1)
        yield fallback
        if state.get("created") is not None:
            yield GaugeMetricFamily(
                "textclf_model_registered_timestamp_seconds",
                "When the version serving was registered: a retrained model promoted since makes it newer",
                value=state["created"],
            )
        yield GaugeMetricFamily("textclf_queue_texts", "Texts waiting for the model", value=state.get("queue_texts", 0))
        for name, text in (
            ("log_written", "Predictions written to the prediction log"),
            ("log_dropped", "Predictions not logged: the log's queue was full (monitor.max_pending)"),
            ("log_failed_writes", "Prediction-log files that could not be written"),
        ):
            if name in state:
                yield CounterMetricFamily(f"textclf_prediction_{name}", text, value=state[name])


class ServiceMetrics:
    """The service's Prometheus registry; with `counting` off (`textclf serve --no-monitoring`, to measure
    what monitoring costs) requests and predictions are not counted."""

    def __init__(self, state: Callable[[], dict[str, Any]], counting: bool = True):
        self.counting = counting
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "textclf_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "textclf_request_seconds",
            "Seconds from a request's arrival to the start of its answer",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "textclf_predictions",
            "Texts classified, by predicted label and model version",
            ["label", "version"],
            registry=self.registry,
        )
        self.entities = Counter(
            "textclf_entities",
            "Entities a token classifier found, by type and model version",
            ["type", "version"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(state))
        # What the default registry of prometheus-client holds: the process's CPU, memory, open files and
        # start time, the Python version, the garbage collector's counts (process_*, python_*).
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def answered(self, path: str, status: int, seconds: float) -> None:
        if not self.counting:
            return
        route = path if path in ROUTES else "other"  # bounded label values, whatever clients ask for
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def classified(self, version: str, labels: list[str]) -> None:
        if not self.counting:
            return
        for label in labels:
            self.predictions.labels(label, version).inc()

    def found(self, version: str, types: list[str]) -> None:
        """A tagger's answer: its entities, counted by type."""
        if not self.counting:
            return
        for kind in types:
            self.entities.labels(kind, version).inc()

    def render(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
