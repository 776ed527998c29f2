"""Run every rule on a raw table and decide: which rows stay, which go, whether the run stops."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.lib.columns import LABEL, ROW_ID, TEXT
from tasks.lib.config import DataConfig, ValidateConfig
from tasks.lib.validation import drift
from tasks.lib.validation.features import (
    CONFLICT,
    CONTROL,
    DERIVED,
    EXACT_COPY_OF,
    LABEL_ISSUE,
    LEAK,
    MAPPED_LABEL,
    NEAR_COPY_OF,
    NOT_LANGUAGE,
    TOKENS,
    add_features,
)
from tasks.lib.validation.suite import (
    DRIFT_RULES,
    Validator,
    class_rules,
    dataset_rules,
    flagged_keys,
    import_gx,
    row_rules,
)

_CONTROL = re.compile(CONTROL)


@dataclass
class RuleOutcome:
    """What one rule found. Row rules count rows; dataset rules observe one value."""

    name: str
    kind: str  # "row" or "dataset"
    policy: str
    demands: str
    passed: bool
    rows: int = 0
    value: float | None = None
    note: str = ""

    @property
    def blocks(self) -> bool:
        return not self.passed and self.policy == "fail"


@dataclass
class Outcome:
    """The verdict: per-rule outcomes, reasons per flagged row, and the rows that go on."""

    rules: dict[str, RuleOutcome] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # row id -> ["rule: detail"]
    removed: set[str] = field(default_factory=set)  # row ids that do not go on
    kept: pd.DataFrame = field(default_factory=pd.DataFrame)
    docs: Path | None = None  # the Data Docs index page, once published

    @property
    def passed(self) -> bool:
        return not any(rule.blocks for rule in self.rules.values())


def _detail(rule: str, row: dict[str, Any], data: DataConfig) -> str:
    """Why this row broke this rule, in words a person can act on."""
    text = row[TEXT]
    if rule == "text_present":
        return "no visible characters"
    if rule == "text_charset":
        found = _CONTROL.search(text)
        return f"character U+{ord(found.group()):04X} at column {found.start() + 1}" if found else "control character"
    if rule == "text_language":
        return str(row[NOT_LANGUAGE])
    if rule == "text_length":
        return f"{len(text)} characters"
    if rule == "text_tokens":
        return f"{int(row[TOKENS])} tokens"
    if rule == "label_in_set":
        mapped = "" if row[MAPPED_LABEL] == row[LABEL] else f" (mapped to {row[MAPPED_LABEL]!r})"
        hint = (
            "; numeric labels need data.label_map"
            if str(row[LABEL]).lstrip("-").isdigit() and not any(label.lstrip("-").isdigit() for label in data.labels)
            else ""
        )
        return f"label {row[LABEL]!r}{mapped} is not one of {list(data.labels)}{hint}"
    if rule == "conflicting_labels":
        return row[CONFLICT]
    if rule == "split_leakage":
        return row[LEAK]
    if rule == "label_noise":
        return str(row[LABEL_ISSUE])
    if rule == "duplicate_exact":
        return f"repeats {row[EXACT_COPY_OF]}"
    return f"repeats {row[NEAR_COPY_OF]} up to case, spacing or Unicode form"


def _class_table(kept: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    counts = kept[MAPPED_LABEL].value_counts().reindex(labels, fill_value=0)
    return pd.DataFrame({"label": labels, "rows": counts.to_numpy(), "share": counts.to_numpy() / max(len(kept), 1)})


def _drift(
    kept: pd.DataFrame, baseline: pd.DataFrame | None, data: DataConfig, config: ValidateConfig
) -> tuple[dict[str, float], dict[str, str]]:
    """Drift statistics against the accepted dataset, and per drift rule what it was measured
    against or why it was not."""
    if baseline is None or baseline.empty:
        why = "not checked: no accepted dataset yet (the first successful run sets the baseline)"
        return {}, dict.fromkeys(DRIFT_RULES, why)
    if kept.empty:
        return {}, dict.fromkeys(DRIFT_RULES, "not checked: no rows remain after the row rules")
    against = f"measured against the accepted dataset ({len(baseline)} rows)"
    statistics = {
        "length_drift": drift.length_drift(
            baseline[TEXT].str.len().to_numpy(), kept[TEXT].str.len().to_numpy(), config.drift.length.statistic
        )
    }
    accepted = sorted(set(baseline[LABEL]))
    if accepted != sorted(data.labels):
        # A class added or removed on purpose shifts the shares by design; the gate guards the change.
        why = f"not checked: the accepted dataset has labels {accepted}, data.labels is {list(data.labels)}"
        return statistics, {"label_drift": why, "length_drift": against}
    statistics["label_drift"] = drift.label_drift(
        baseline[LABEL], kept[MAPPED_LABEL], list(data.labels), config.drift.labels.statistic
    )
    return statistics, dict.fromkeys(DRIFT_RULES, against)


def _class_note(classes: pd.DataFrame, minimum: float) -> str:
    low = classes[classes["share"] < minimum]
    return "; ".join(f"label {r.label!r}: {r.rows} rows ({r.share:.1%})" for r in low.itertuples())


def _judge_rows(
    validator: Validator, rows: pd.DataFrame, data: DataConfig, config: ValidateConfig, outcome: Outcome, noise: bool
) -> None:
    """Row rules: record each rule's count and each flagged row's reasons; set aside per policy."""
    checks = row_rules(validator.gx, data, config, noise)
    results = validator.validate("rows", rows, checks, key=ROW_ID)
    by_id = rows.set_index(ROW_ID, drop=False)
    for rule in checks:
        policy = getattr(config.rules, rule.name)
        flagged = flagged_keys(results[rule.name])
        outcome.rules[rule.name] = RuleOutcome(rule.name, "row", policy, rule.demands, not flagged, rows=len(flagged))
        for row in by_id.loc[flagged].to_dict(orient="records"):
            outcome.reasons.setdefault(row[ROW_ID], []).append(f"{rule.name}: {_detail(rule.name, row, data)}")
        if policy != "warn":
            outcome.removed.update(flagged)


def _judge_dataset(
    validator: Validator,
    kept: pd.DataFrame,
    baseline: pd.DataFrame | None,
    data: DataConfig,
    config: ValidateConfig,
    outcome: Outcome,
) -> None:
    """Dataset rules on the rows that remain: size, class shares, imbalance, drift."""
    gx = validator.gx
    classes = _class_table(kept, list(data.labels))
    present = classes["rows"][classes["rows"] > 0]
    statistics, drift_notes = _drift(kept, baseline, data, config)
    values = {
        "min_rows": len(kept),
        "min_class_share": float(classes["share"].min()),
        "max_imbalance_ratio": float(present.max() / present.min()) if len(present) else 0.0,
        **statistics,
    }
    table = pd.DataFrame([{"rows": values["min_rows"], "imbalance_ratio": values["max_imbalance_ratio"], **statistics}])
    class_checks = class_rules(gx, config)
    results = {
        **validator.validate("classes", classes, class_checks, key="label"),
        **validator.validate("dataset", table, dataset_rules(gx, config, measured=statistics)),
    }
    notes = {
        "min_class_share": _class_note(classes, config.min_class_share),
        **drift_notes,
    }
    for rule in class_checks + dataset_rules(gx, config):
        result = results.get(rule.name)  # None: not checked, and the note says why
        passed = result is None or bool(result.success)
        note = notes.get(rule.name, "") if result is None or not passed else ""
        outcome.rules[rule.name] = RuleOutcome(
            rule.name,
            "dataset",
            getattr(config.rules, rule.name),
            rule.demands,
            passed=passed,
            value=values.get(rule.name),
            note=note,
        )


def check(
    frame: pd.DataFrame,
    data: DataConfig,
    config: ValidateConfig,
    tokens: np.ndarray,
    baseline: pd.DataFrame | None = None,
    docs: Path | None = None,
    dataset_rules: bool = True,
) -> Outcome:
    """Run the row rules, apply their policies, then the dataset rules on the rows that remain.

    Args:
        frame: the raw table (tasks.lib.readers schema).
        data: the `data` section (label set and map).
        config: the `validate` section (bounds, policies, dataset limits, drift).
        tokens: tokens per row of `frame` (features.token_counts).
        baseline: the last accepted (validated) dataset, for drift; None on a first run.
        docs: where to build the Data Docs site (None: no docs).
        dataset_rules: False judges rows only (a batch of new data on its own).
    """
    validator = Validator(import_gx(), docs)
    # Label noise is judged on a whole dataset only: a model learns nothing from one small batch.
    noise = dataset_rules and config.rules.label_noise != "off"
    rows = add_features(frame, data.label_map, tokens, (list(data.labels), config.label_noise) if noise else None)
    outcome = Outcome()
    _judge_rows(validator, rows, data, config, outcome, noise)
    kept = rows[~rows[ROW_ID].isin(outcome.removed)]
    if dataset_rules:
        _judge_dataset(validator, kept, baseline, data, config, outcome)
    outcome.kept = kept.assign(**{LABEL: kept[MAPPED_LABEL]}).drop(columns=list(DERIVED)).reset_index(drop=True)
    validator.build_docs()
    return outcome
