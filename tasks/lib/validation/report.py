"""What validation tells people and machines: JSON summary, Markdown."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tasks.lib.config import ReportText
from tasks.lib.validation.checks import Outcome, RuleOutcome

EXAMPLES = 5
ACTIONS = {"fail": "stops the run", "quarantine": "quarantined", "warn": "kept, reported", "repair": "repaired, kept"}


def shown_text(text: str, report_text: ReportText) -> str:
    """A row's text as reports show it (`validate.report_text`), with a trailing space; empty for `none`."""
    if report_text == "none":
        return ""
    if report_text == "hash":
        return f"sha256:{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:12]} "
    return f"{text[:60]!r} "


def _examples(records: list[dict[str, Any]], rule: str, report_text: ReportText) -> list[str]:
    found = []
    for record in records:
        for reason in record["reasons"]:
            if reason.startswith(rule + ":"):
                found.append(
                    f"{Path(record['file']).name}:{record['line']}: {shown_text(record['text'], report_text)}"
                    f"(label {record['label']!r}): {reason[len(rule) + 2 :]}"
                )
        if len(found) == EXAMPLES:
            break
    return found


def _rule_summary(rule: RuleOutcome, records: list[dict[str, Any]], report_text: ReportText) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": rule.kind, "policy": rule.policy, "demands": rule.demands, "passed": rule.passed}
    if rule.kind == "row":
        entry |= {"rows": rule.rows, "examples": _examples(records, rule.name, report_text) if rule.rows else []}
    else:
        entry |= {"value": rule.value, "checked": rule.value is not None}
    if rule.note:
        entry["note"] = rule.note
    return entry


def summary(outcome: Outcome, rows_read: int, report_text: ReportText) -> dict[str, Any]:
    """Machine-readable summary (dvc.yaml metrics): verdict, counts per rule, first examples."""
    return {
        "passed": outcome.passed,
        "rows_read": rows_read,
        "rows_kept": outcome.kept_rows,
        "rows_quarantined": len(outcome.removed),
        "rows_warned": sum(r["kept"] for r in outcome.records),
        "failed_rules": [r.name for r in outcome.rules.values() if r.blocks],
        "rules": {name: _rule_summary(rule, outcome.records, report_text) for name, rule in outcome.rules.items()},
        "data_docs": str(outcome.docs) if outcome.docs else None,
    }


def _found(rule: dict[str, Any]) -> str:
    if rule["kind"] == "row":
        return f"{rule['rows']} rows"
    if not rule["checked"]:
        return "not checked"
    value = rule["value"]
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _verdict(rule: dict[str, Any]) -> str:
    if rule["passed"]:
        return "ok" if rule["kind"] == "row" or rule["checked"] else "–"  # noqa: RUF001 - an en dash: not checked
    return {"fail": "**FAILED**", "quarantine": "quarantined", "warn": "warning", "repair": "repaired"}[rule["policy"]]


def render(report: dict[str, Any], quarantine: Path) -> str:
    """The Markdown a person reads: the rule table, then what each failing rule found."""
    verdict = "PASSED" if report["passed"] else "FAILED (" + ", ".join(report["failed_rules"]) + ")"
    lines = [
        f"## Validation {verdict}",
        "",
        f"{report['rows_read']} rows read, {report['rows_kept']} kept, {report['rows_quarantined']} set aside, "
        f"{report['rows_warned']} kept with warnings. Every flagged row: `{quarantine}`.",
    ]
    if report["data_docs"]:
        lines.append(f"Data Docs: [{report['data_docs']}](file://{report['data_docs']})")
    lines += ["", "| rule | policy | demands | found | result |", "|---|---|---|---|---|"]
    lines += [
        f"| {name} | {r['policy']} | {r['demands']} | {_found(r)} | {_verdict(r)} |"
        for name, r in report["rules"].items()
    ]
    details: list[str] = []
    for name, rule in report["rules"].items():
        if rule["passed"] and not rule.get("note"):
            continue
        if rule["kind"] == "row":
            details.append(f"- {name}: {rule['rows']} rows ({ACTIONS[rule['policy']]})")
            details += [f"    {example}" for example in rule["examples"]]
        elif not rule["passed"]:
            details.append(
                f"- {name}: {_found(rule)}, demands {rule['demands']} ({ACTIONS[rule['policy']]})"
                + (f"; {rule['note']}" if rule.get("note") else "")
            )
            if name.endswith("_drift"):
                details.append(
                    f"    If this change is intended, set validate.rules.{name}: warn for one run "
                    "to accept the new data as the baseline."
                )
        else:
            details.append(f"- {name}: {rule['note']}")
    return "\n".join(lines + (["", *details] if details else []))
