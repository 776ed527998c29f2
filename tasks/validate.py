"""Stage `validate`: a Great Expectations suite built from params, and a quarantine.

Row rules flag rows; each rule's policy (params `validate.rules`) says whether
a flagged row stops the run (`fail`) or is set aside (`quarantine`). Either
way every flagged row lands in the quarantine file with its source line and
reasons: nothing is dropped silently. Dataset rules (row count) then run on
what remains. The previous validated data stays in place when this fails.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import DataConfig, Params, PipelineError, ValidateConfig
from tasks.io import LABEL, ROW_ID, SOURCE_FILE, SOURCE_LINE, TEXT, atomic_path, read_table, write_json, write_table

NORMALISED = "_text_normalised"
EXAMPLES = 5


class ValidationFailed(PipelineError, RuntimeError):
    """The data is unfit; the message is the readable summary."""


@dataclass
class Outcome:
    """What the suite found: reasons per flagged row, and the dataset verdict."""

    reasons: dict[str, list[str]] = field(default_factory=dict)  # row_id -> ["rule: why"]
    failed_rules: dict[str, int] = field(default_factory=dict)  # rule with policy fail -> rows
    counts: dict[str, int] = field(default_factory=dict)  # rule -> flagged rows
    dataset_errors: list[str] = field(default_factory=list)
    kept: pd.DataFrame | None = None

    @property
    def passed(self) -> bool:
        return not self.failed_rules and not self.dataset_errors


def normalise(text: str) -> str:
    """Case- and whitespace-insensitive form used for duplicate detection."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def _row_suite(gx: Any, data: DataConfig, config: ValidateConfig) -> list[tuple[str, Any, str]]:
    """(rule name, expectation, why) for each row-level rule."""
    e = gx.expectations
    return [
        ("text_present", e.ExpectColumnValuesToMatchRegex(column=TEXT, regex=r"\S"),
         "text is empty or whitespace only"),
        ("text_length", e.ExpectColumnValueLengthsToBeBetween(
            column=TEXT, min_value=config.min_chars, max_value=config.max_chars),
         f"text length outside [{config.min_chars}, {config.max_chars}] characters"),
        ("label_in_set", e.ExpectColumnValuesToBeInSet(column=LABEL, value_set=list(data.labels)),
         f"label not in data.labels {list(data.labels)}"),
        ("duplicate_text", e.ExpectColumnValuesToBeUnique(column=NORMALISED),
         "duplicate of an earlier row (after case/whitespace normalisation)"),
    ]


def _run_suite(gx: Any, frame: pd.DataFrame, expectations: list[Any]) -> list[Any]:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("pipeline").add_dataframe_asset("rows")
    batch_definition = asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="rows"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                  "unexpected_index_column_names": [ROW_ID]})
    return list(result.results)


def _import_gx() -> Any:
    # No usage statistics from an offline pipeline; GX reads this at import.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    return gx


def check(frame: pd.DataFrame, data: DataConfig, config: ValidateConfig) -> Outcome:
    """Run the row rules, apply each rule's policy, then the dataset rules on what is kept.

    Args:
        frame: the raw table (tasks.ingest schema).
        data: the `data` section (label set).
        config: the `validate` section (bounds, policies, minimum rows).
    """
    gx = _import_gx()
    frame = frame.reset_index(drop=True).copy()
    frame[NORMALISED] = frame[TEXT].map(normalise)
    rules = _row_suite(gx, data, config)
    outcome = Outcome()
    results = _run_suite(gx, frame, [expectation for _, expectation, _ in rules])
    first_copy = set(frame.drop_duplicates(NORMALISED)[ROW_ID])
    for (rule, _, why), result in zip(rules, results):
        flagged = [item[ROW_ID] for item in result.result.get("unexpected_index_list") or []]
        if rule == "duplicate_text":
            flagged = [row for row in flagged if row not in first_copy]  # keep the first copy
        outcome.counts[rule] = len(flagged)
        for row in flagged:
            outcome.reasons.setdefault(row, []).append(f"{rule}: {why}")
        if flagged and getattr(config.rules, rule) == "fail":
            outcome.failed_rules[rule] = len(flagged)
    kept = frame[~frame[ROW_ID].isin(outcome.reasons)].drop(columns=[NORMALISED])
    table = _run_suite(gx, kept, [gx.expectations.ExpectTableRowCountToBeBetween(min_value=config.min_rows)])
    if not table[0].success:
        outcome.dataset_errors.append(
            f"min_rows: {len(kept)} rows remain after quarantine, validate.min_rows is {config.min_rows}")
    outcome.kept = kept
    return outcome


def quarantine_records(frame: pd.DataFrame, outcome: Outcome) -> list[dict[str, Any]]:
    """The flagged rows as they were read, with where they came from and why."""
    flagged = frame[frame[ROW_ID].isin(outcome.reasons)]
    return [{"row_id": row[ROW_ID], "file": row[SOURCE_FILE], "line": int(row[SOURCE_LINE]),
             "text": row[TEXT], "label": row[LABEL], "reasons": outcome.reasons[row[ROW_ID]]}
            for row in flagged.to_dict(orient="records")]


def summary(outcome: Outcome, records: list[dict[str, Any]], total: int, config: ValidateConfig) -> dict[str, Any]:
    """Machine-readable summary: counts per rule, policy, verdict and first examples."""
    rules = {}
    for rule, count in outcome.counts.items():
        examples = [f"{r['file']}:{r['line']}: {r['text'][:80]!r} (label {r['label']!r})"
                    for r in records if any(reason.startswith(rule + ":") for reason in r["reasons"])][:EXAMPLES]
        rules[rule] = {"policy": getattr(config.rules, rule), "rows": count, "examples": examples}
    return {"passed": outcome.passed, "rows_read": total, "rows_kept": len(outcome.kept),
            "rows_quarantined": len(records), "rules": rules, "dataset_errors": outcome.dataset_errors}


def render(report: dict[str, Any], quarantine: Path) -> str:
    """The summary a person reads when a run is rejected."""
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [f"Validation {verdict}: {report['rows_read']} rows read, {report['rows_kept']} kept, "
             f"{report['rows_quarantined']} quarantined ({quarantine})"]
    for rule, info in report["rules"].items():
        if not info["rows"]:
            continue
        action = "stops the run" if info["policy"] == "fail" else "quarantined"
        lines.append(f"- {rule}: {info['rows']} rows ({action})")
        lines.extend(f"    {example}" for example in info["examples"])
    lines.extend(f"- {error}" for error in report["dataset_errors"])
    return "\n".join(lines)


def run(params: Params) -> None:
    """Stage entry point: write validated rows, quarantine and summary; raise if unfit."""
    frame = read_table(params.path("raw"))
    outcome = check(frame, params.data, params.validate_)
    records = quarantine_records(frame, outcome)
    quarantine = params.path("quarantine")
    with atomic_path(quarantine) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    report = summary(outcome, records, len(frame), params.validate_)
    write_json(params.path("metrics") / "validate.json", report)
    text = render(report, quarantine)
    (params.path("reports")).mkdir(parents=True, exist_ok=True)
    with atomic_path(params.path("reports") / "validation.md") as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    if not outcome.passed:
        # The validated output is declared `persist` in dvc.yaml and only
        # written on success, so the last good data stays.
        raise ValidationFailed(text)
    write_table(params.path("validated"), outcome.kept)
    print(text)
