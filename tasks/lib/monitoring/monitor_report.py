"""The monitoring run's report: a folder per run under paths.monitoring, and `latest` pointing at the newest.

Each folder holds `index.html` (the rules, live accuracy, and Vega-Lite charts of what each
rule compares; Vega's scripts inlined, so the one file renders offline), `monitor.json`
(tasks.lib.monitoring.traffic_monitor.MonitorRun) and `drifted.parquet` (the embedded served texts and
their drift scores, which `textclf review export` reads).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.lib.io import write_text
from tasks.lib.monitoring.traffic_monitor import DRIFTED_FILE, Comparison, MonitorRun
from tasks.lib.reporting.offline_html import VEGA_SCRIPTS, inline_scripts
from tasks.lib.reporting.web_assets import installed

REPORT_FILE, RUN_FILE, LATEST = "index.html", "monitor.json", "latest"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
tr.fired td { background: #fde2e1; }
.charts { display: flex; flex-wrap: wrap; gap: 2rem; }
"""


def _spec(title: str, rows: list[dict[str, Any]], height: int = 200, **body: Any) -> dict[str, Any]:
    """A Vega-Lite chart of `rows`, 360 pixels wide."""
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "width": 360,
        "height": height,
        "data": {"values": rows},
        **body,
    }


def _histogram(name: str, groups: dict[str, np.ndarray], title: str, x: str) -> dict[str, Any]:
    """A Vega-Lite spec of normalised histograms of each group, over shared bins."""
    values = np.concatenate([v for v in groups.values() if len(v)]) if groups else np.array([0.0])
    edges = np.histogram_bin_edges(values, bins=30)
    rows = []
    for group, data in groups.items():
        counts = np.histogram(data, edges)[0] / max(len(data), 1)
        rows += [
            {"group": group, "start": float(a), "end": float(b), "share": float(c)}
            for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
        ]
    return _spec(
        title,
        rows,
        name=name,
        mark={"type": "bar", "opacity": 0.55},
        encoding={
            "x": {"field": "start", "type": "quantitative", "title": x, "bin": {"binned": True}},
            "x2": {"field": "end"},
            "y": {"field": "share", "type": "quantitative", "stack": None, "title": "share of texts"},
            "color": {"field": "group", "type": "nominal", "title": None},
        },
    )


def _label_shares(served: pd.Series, reference: pd.Series, labels: list[str]) -> dict[str, Any]:
    rows = [
        {"group": group, "label": label, "share": float((data == label).mean()) if len(data) else 0.0}
        for group, data in (("served", served), ("test split", reference))
        for label in labels
    ]
    return _spec(
        "Predicted labels",
        rows,
        mark="bar",
        encoding={
            "x": {"field": "label", "type": "nominal"},
            "xOffset": {"field": "group"},
            "y": {"field": "share", "type": "quantitative"},
            "color": {"field": "group", "type": "nominal", "title": None},
        },
    )


def _embedding_map(reference: np.ndarray, served: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Training and served embeddings on the training sample's first two principal components."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(reference)
    rows = [
        {"group": group, "pc1": float(a), "pc2": float(b), "score": None if np.isnan(s) else float(s)}
        for group, points, score in (
            ("training", reference, np.full(len(reference), np.nan)),
            ("served", served, scores),
        )
        for (a, b), s in zip(pca.transform(points) if len(points) else [], score, strict=False)
    ]
    return _spec(
        "Sentence embeddings (principal components of the training texts)",
        rows,
        300,
        mark={"type": "circle", "size": 12, "opacity": 0.5},
        encoding={
            "x": {"field": "pc1", "type": "quantitative"},
            "y": {"field": "pc2", "type": "quantitative"},
            "color": {"field": "group", "type": "nominal", "title": None},
            "tooltip": [{"field": "score", "title": "drift score"}],
        },
    )


def _live_accuracy(run: MonitorRun) -> dict[str, Any] | None:
    live = run.live_accuracy
    if live.accuracy is None:
        return None
    rows = [{"what": "live (feedback)", "accuracy": live.accuracy, "low": live.low, "high": live.high}]
    if live.test_accuracy is not None:
        rows.append({"what": "gate test split", "accuracy": live.test_accuracy, "low": None, "high": None})
    return _spec(
        f"{live.metric.capitalize()} ({live.labelled} labelled served texts, {live.confidence:.0%} interval)",
        rows,
        120,
        layer=[
            {
                "mark": "rule",
                "encoding": {
                    "x": {"field": "low", "type": "quantitative"},
                    "x2": {"field": "high"},
                    "y": {"field": "what", "type": "nominal", "title": None},
                },
            },
            {
                "mark": {"type": "point", "filled": True, "size": 80},
                "encoding": {
                    "x": {"field": "accuracy", "type": "quantitative", "scale": {"zero": False}, "title": live.metric},
                    "y": {"field": "what", "type": "nominal"},
                },
            },
        ],
    )


def charts(run: MonitorRun, compared: Comparison) -> list[dict[str, Any]]:
    """The Vega-Lite specs of the report, in the order shown."""
    specs: list[dict[str, Any]] = []
    reference, window = compared.reference, compared.window
    if reference is not None and window is not None:
        served = window.answers
        specs.append(
            _histogram(
                "length",
                {"served": served["text_chars"].to_numpy(), "training": reference.train["text_chars"].to_numpy()},
                "Text length",
                "characters",
            )
        )
        specs.append(_label_shares(served["label"], reference.test["label"], window.labels))
        specs.append(
            _histogram(
                "confidence",
                {"served": served["confidence"].to_numpy(), "test split": reference.test["confidence"].to_numpy()},
                "Confidence (top-class probability)",
                "probability",
            )
        )
        if compared.embedded is not None:
            scores = compared.drifted["drift_score"].to_numpy(dtype=float)
            specs.append(_embedding_map(reference.embeddings(), compared.embedded, scores))
    live = _live_accuracy(run)
    if live is not None:
        specs.append(live)
    return specs


def render(run: MonitorRun, specs: list[dict[str, Any]]) -> str:
    """The report page (its scripts still CDN addresses: write_report inlines them)."""
    rows = "".join(
        f'<tr class="{"fired" if f.fired else ""}"><td>{html.escape(f.rule)}</td><td>{html.escape(f.statistic)}</td>'
        f"<td>{'not computed' if f.value is None else f'{f.value:.4f}'}</td><td>{f.threshold}</td>"
        f"<td>{f.policy}</td><td>{'yes' if f.fired else 'no'}</td><td>{html.escape(f.note)}</td></tr>"
        for f in run.findings
    )
    table = (
        "<table><tr><th>rule</th><th>statistic</th><th>value</th><th>threshold</th><th>policy</th><th>fired</th>"
        f"<th>note</th></tr>{rows}</table>"
        if run.findings
        else ""
    )
    divs = "".join(f'<div id="chart{i}"></div>' for i in range(len(specs)))
    embeds = "".join(
        f"vegaEmbed('#chart{i}', {json.dumps(spec)}, {{actions: false, renderer: 'svg'}});"
        for i, spec in enumerate(specs)
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Monitoring {html.escape(run.version)}</title>"
        f"<style>{_STYLE}</style>{VEGA_SCRIPTS}</head><body>"
        f"<h1>Monitoring {html.escape(run.version)}</h1>"
        f"<p>{run.window_start:%Y-%m-%d %H:%M:%S} to {run.window_end:%Y-%m-%d %H:%M:%S} UTC, "
        f"{run.predictions} predictions. {html.escape(run.summary())}</p>"
        f'{table}<div class="charts">{divs}</div><script>{embeds}</script></body></html>'
    )


def write_report(folder: Path, run: MonitorRun, compared: Comparison) -> Path:
    """Write the run's folder under `folder` and point `latest` at it; returns the run's folder."""
    target = folder / run.at.strftime("%Y%m%dT%H%M%SZ")
    target.mkdir(parents=True, exist_ok=True)
    write_text(target / RUN_FILE, run.model_dump_json(indent=2) + "\n")
    compared.drifted.to_parquet(target / DRIFTED_FILE, index=False)
    page = target / REPORT_FILE
    write_text(page, render(run, charts(run, compared)))
    inline_scripts(page, installed())
    link = folder / f".{LATEST}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(target.name)
    os.replace(link, folder / LATEST)  # atomic: a reader sees the previous run or this one
    return target
