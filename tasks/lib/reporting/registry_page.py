"""`textclf registry report`: one offline HTML page of a registry, for people who compare versions.

Every version with its stage, test metric and confidence interval, a chart of that metric over
time (production and the rollback target marked), and, per version, its lineage record, gate
report and model card. Vega's scripts are inlined (tasks.lib.reporting.offline_html), so the
one file opens on a host with no network; everything the registry holds is escaped, never
rendered as HTML.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tasks.lib.io import write_text
from tasks.lib.reporting.offline_html import VEGA_SCRIPTS, inline_scripts
from tasks.lib.reporting.web_assets import installed
from tasks.lib.storage.model_card import CARD_FILE
from tasks.lib.storage.registry import Registry, RegistryError

GATE_FILE = "gate.md"  # a version's gate report, as promote registers it
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
tr.production td { background: #e3f4e1; }
tr.rollback td { background: #fff6d6; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; max-height: 30rem; }
details { margin: .4rem 0; }
"""


def headline(record: dict[str, Any]) -> tuple[str, float, tuple[float, float] | None] | None:
    """The test metric a version is judged by: (name, value, 95% interval): accuracy for a classifier,
    entity F1 for a tagger; None when the record has no test metrics."""
    evaluate = (record.get("metrics") or {}).get("evaluate") or {}
    for name in ("accuracy", "f1"):
        if isinstance(evaluate.get(name), (int, float)):
            interval = (evaluate.get("interval") or {}).get(name)
            return name, float(evaluate[name]), (float(interval[0]), float(interval[1])) if interval else None
    return None


def _chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Vega-Lite: each version's metric over its creation time, its interval as a bar, its marker by role."""
    # Padding keeps the first and last versions' markers and labels off the chart's edges.
    x = {"field": "created", "type": "temporal", "title": "registered", "scale": {"padding": 24}}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "Test metric of each version (95% interval)",
        "width": 640,
        "height": 260,
        "data": {"values": rows},
        "layer": [
            {
                "mark": "rule",
                "encoding": {
                    "x": x,
                    "y": {"field": "low", "type": "quantitative", "scale": {"zero": False}},
                    "y2": {"field": "high"},
                },
            },
            {
                "mark": {"type": "point", "filled": True, "size": 90},
                "encoding": {
                    "x": x,
                    "y": {"field": "value", "type": "quantitative", "scale": {"zero": False}, "title": "test metric"},
                    "color": {"field": "role", "type": "nominal", "title": ""},
                    "shape": {"field": "role", "type": "nominal", "title": ""},
                    "tooltip": [{"field": "version"}, {"field": "metric"}, {"field": "value"}, {"field": "stage"}],
                },
            },
            {
                "mark": {"type": "text", "dy": -12},
                "encoding": {"x": x, "y": {"field": "value", "type": "quantitative"}, "text": {"field": "version"}},
            },
        ],
    }


def render(registry: Registry) -> str:
    """The page (its scripts still CDN addresses: write_page inlines them)."""
    stages, rollbacks = registry.stages(), registry.rollbacks()
    production = registry.production_version()
    previous = registry.previous_productions(production) if production else []
    target = previous[0] if previous else None
    rows, chart_rows, sections = [], [], []
    for version, stage in stages.items():
        try:
            record = registry.record(version)
        except RegistryError as exc:  # one damaged version must not hide the others
            damaged = html.escape(str(exc))
            rows.append(f"<tr><td>{version}</td><td>{stage}</td><td colspan='6'>damaged: {damaged}</td></tr>")
            continue
        role = "production" if version == production else "rollback target" if version == target else stage
        found = headline(record)
        metric = "n/a"
        if found:
            name, value, interval = found
            metric = f"{name} {value:.4f}" + (f" ({interval[0]:.4f}-{interval[1]:.4f})" if interval else "")
            low, high = interval or (value, value)
            chart_rows.append(
                {"version": version, "created": record.get("created_at"), "metric": name, "value": value}
                | {"low": low, "high": high, "stage": stage, "role": role}
            )
        note = f"rolled back: {rollbacks[version].get('reason', '')}" if version in rollbacks else ""
        css = {"production": "production", "rollback target": "rollback"}.get(role, "")
        data = record.get("data") or {}
        cells = [
            role,
            str(record.get("created_at", "")),
            str(record.get("variant", "")),
            metric,
            str(data.get("validated_md5", ""))[:16],
            str(record.get("git_commit", ""))[:12],
            note,
        ]
        rows.append(
            f"<tr class='{css}'><td><a href='#{version}'>{version}</a></td>"
            + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
            + "</tr>"
        )
        parts = [("lineage record (version.json)", json.dumps(record, indent=2))]
        for title, name in (("gate report", GATE_FILE), ("model card", CARD_FILE)):
            text = registry.read_text(version, name)
            parts.append((title, text if text is not None else f"(this version has no {name})"))
        sections.append(
            f"<h3 id='{version}'>{version} ({html.escape(role)})</h3>"
            + "".join(
                f"<details><summary>{title}</summary><pre>{html.escape(body)}</pre></details>" for title, body in parts
            )
        )
    table = (
        "<table><tr><th>version</th><th>stage</th><th>registered</th><th>variant</th><th>test metric (95%)</th>"
        f"<th>data (validated md5)</th><th>commit</th><th>note</th></tr>{''.join(rows)}</table>"
    )
    chart = (
        f"<div id='chart'></div><script>vegaEmbed('#chart', {json.dumps(_chart(chart_rows))}, "
        "{actions: false, renderer: 'svg'});</script>"
        if chart_rows
        else "<p>No version has test metrics to chart.</p>"
    )
    where = html.escape(str(registry.store.url))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Registry {where}</title>"
        f"<style>{_STYLE}</style>{VEGA_SCRIPTS}</head><body><h1>Registry</h1>"
        f"<p><code>{where}</code>: {len(stages)} versions; production {production or 'none'}"
        f"{f', rollback target {target}' if target else ''}.</p>{table}{chart}<h2>Versions</h2>{''.join(sections)}"
        "</body></html>"
    )


def write_page(registry: Registry, out: Path) -> Path:
    """Write the page to `out`, its scripts inlined; returns `out`.

    Raises:
        MissingWebAssets: the pinned scripts are not installed (the message says how).
    """
    write_text(out, render(registry))
    inline_scripts(out, installed())
    return out
