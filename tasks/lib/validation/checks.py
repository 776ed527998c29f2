"""Run every rule on a raw table and decide: which rows stay, which go, whether the run stops.

The table is read in batches, three times, so memory does not grow with the rows:

1. the text, label and split columns, into compact per-row keys (tasks.lib.validation.groups):
   text hashes, label and split codes, lengths;
2. the row ids the group findings name, and the texts label noise checks (a sample of at
   most `label_noise.max_rows`);
3. every column, batch by batch: the derived columns, the Great Expectations row suite, the
   quarantine records and the accepted rows (handed to `keep`).

The dataset rules then judge the accepted rows from the keys: counts, class shares, drift.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.lib.columns import LABEL, ROW_ID, SOURCE_FILE, SOURCE_LINE, SPLIT, TEXT
from tasks.lib.config import DataConfig, SparkConfig, Task, ValidateConfig
from tasks.lib.data.batches import Table, Vocabulary, as_table, gather
from tasks.lib.data.sentences import entity_types, repair_iob
from tasks.lib.validation import drift
from tasks.lib.validation.features import (
    BROKEN_IOB,
    CONFLICT,
    CONTROL,
    DERIVED,
    EXACT_COPY_OF,
    LABEL_ISSUE,
    LEAK,
    MAPPED_LABEL,
    MISALIGNED,
    NEAR_COPY_OF,
    NOT_LANGUAGE,
    SPLIT_PRIORITY,
    TAG_DERIVED,
    TOKENS,
    UNKNOWN_TAG,
    TokenCounter,
    add_features,
    map_labels,
)
from tasks.lib.validation.groups import GroupFindings, RowKeys, group_findings, listing, row_keys
from tasks.lib.validation.label_noise import rows_to_check, suspected_labels
from tasks.lib.validation.suite import (
    DRIFT_RULES,
    Rule,
    Validator,
    class_rules,
    dataset_rules,
    flagged_keys,
    import_gx,
    row_rules,
)

_CONTROL = re.compile(CONTROL)
SPLIT_NAMES = {priority: name for name, priority in SPLIT_PRIORITY.items()}


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
    records: list[dict[str, Any]] = field(default_factory=list)  # the quarantine file's rows
    kept_rows: int = 0
    kept: pd.DataFrame = field(default_factory=pd.DataFrame)  # the rows that go on, unless handed to `keep`
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
    if rule == "tags_aligned":
        return str(row[MISALIGNED])
    if rule == "tags_in_set":
        return f"{row[UNKNOWN_TAG]} is not one of O, B-/I- of {list(data.labels)}"
    if rule == "tags_iob":
        return str(row[BROKEN_IOB])
    if rule == "conflicting_labels":
        return row[CONFLICT]
    if rule == "split_leakage":
        return row[LEAK]
    if rule == "label_noise":
        return str(row[LABEL_ISSUE])
    if rule == "duplicate_exact":
        return f"repeats {row[EXACT_COPY_OF]}"
    return f"repeats {row[NEAR_COPY_OF]} up to case, spacing or Unicode form"


def _records(batch: pd.DataFrame, flagged_ids: set[str], outcome: Outcome) -> list[dict[str, Any]]:
    """Every flagged row of `batch` (`flagged_ids`) as it was read, where it came from, why, and whether it went on."""
    flagged = batch[batch[ROW_ID].isin(flagged_ids)]
    return [
        {
            "row_id": row[ROW_ID],
            "file": row[SOURCE_FILE],
            "line": int(row[SOURCE_LINE]),
            "split": row[SPLIT],
            "text": row[TEXT],
            "label": row[LABEL],
            "reasons": outcome.reasons[row[ROW_ID]],
            "kept": row[ROW_ID] not in outcome.removed,
        }
        for row in flagged.to_dict(orient="records")
    ]


@dataclass
class Profile:
    """The labels (after data.label_map) and text lengths of a set of rows, for the class rules and
    drift; for token classification, one label per entity (its type) instead of one per row."""

    labels: pd.Series  # categorical
    lengths: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.lengths)


def profile(table: Table, task: Task = "sequence_classification") -> Profile:
    """An accepted dataset's labels and lengths, read batch by batch into arrays of its size."""
    vocabulary, codes, lengths, start = Vocabulary(), np.zeros(table.rows, np.int32), np.zeros(table.rows, np.int32), 0
    for batch in table.batches([TEXT, LABEL]):
        end = start + len(batch)
        codes[start:end] = vocabulary.codes(batch[LABEL])
        lengths[start:end] = batch[TEXT].str.len().to_numpy(np.int32)
        start = end
    return _profile(vocabulary, codes, lengths, task)


def _profile(vocabulary: Vocabulary, codes: np.ndarray, lengths: np.ndarray, task: Task) -> Profile:
    """The Profile of rows with label `codes` (into `vocabulary`; -1: none) and text `lengths`."""
    if task == "sequence_classification":
        return Profile(vocabulary.series(codes), lengths)
    # A sentence's label is its tag sequence: count each distinct one's entities once, times its rows.
    rows = np.bincount(codes[codes >= 0], minlength=len(vocabulary.values))
    per_type: Counter[str] = Counter()
    for sequence, count in zip(vocabulary.values, rows, strict=True):
        for kind in entity_types(sequence.split(" ")) if count else []:
            per_type[kind] += int(count)
    types = sorted(per_type)
    mentions = pd.Categorical.from_codes(np.repeat(np.arange(len(types)), [per_type[t] for t in types]), types)
    return Profile(pd.Series(mentions), lengths)


def _class_table(kept: Profile, labels: list[str]) -> pd.DataFrame:
    counts = kept.labels.value_counts().reindex(labels, fill_value=0)
    # Of the labels: one per row, or (token classification) one per entity.
    share = counts.to_numpy() / max(len(kept.labels), 1)
    return pd.DataFrame({"label": labels, "rows": counts.to_numpy(), "share": share})


def _drift(
    kept: Profile, baseline: Profile | None, data: DataConfig, config: ValidateConfig
) -> tuple[dict[str, float], dict[str, str]]:
    """Drift statistics against the accepted dataset, and per drift rule what it was measured
    against or why it was not."""
    if baseline is None or baseline.rows == 0:
        why = "not checked: no accepted dataset yet (the first successful run sets the baseline)"
        return {}, dict.fromkeys(DRIFT_RULES, why)
    if kept.rows == 0:
        return {}, dict.fromkeys(DRIFT_RULES, "not checked: no rows remain after the row rules")
    against = f"measured against the accepted dataset ({baseline.rows} rows)"
    statistics = {"length_drift": drift.length_drift(baseline.lengths, kept.lengths, config.drift.length.statistic)}
    accepted = sorted(baseline.labels.dropna().unique())
    if accepted != sorted(data.labels):
        # A class added or removed on purpose shifts the shares by design; the gate guards the change.
        why = f"not checked: the accepted dataset has labels {accepted}, data.labels is {list(data.labels)}"
        return statistics, {"label_drift": why, "length_drift": against}
    statistics["label_drift"] = drift.label_drift(
        baseline.labels, kept.labels, list(data.labels), config.drift.labels.statistic
    )
    return statistics, dict.fromkeys(DRIFT_RULES, against)


def _class_note(classes: pd.DataFrame, minimum: float) -> str:
    low = classes[classes["share"] < minimum]
    return "; ".join(f"label {r.label!r}: {r.rows} rows ({r.share:.1%})" for r in low.itertuples())


@dataclass
class _Findings:
    """What the whole table says about each row: group findings, label noise, and the row ids they name."""

    keys: RowKeys
    groups: GroupFindings
    noise: dict[int, str]  # position -> why its label looks wrong
    row_ids: pd.Series  # position -> row id, for the positions the findings name

    def columns(self, start: int, rows: int) -> dict[str, list[str | None]]:
        """The finding columns (detail or None) of rows `start` to `start + rows`."""
        return self.at(np.arange(start, start + rows))

    def at(self, positions: np.ndarray) -> dict[str, list[str | None]]:
        """The finding columns (detail or None) of the rows at `positions` (sorted)."""
        groups, ids = self.groups, self.row_ids
        found: dict[str, list[str | None]] = {
            name: [None] * len(positions) for name in (CONFLICT, LEAK, EXACT_COPY_OF, NEAR_COPY_OF, LABEL_ISSUE)
        }
        for i in np.flatnonzero(groups.conflict[positions] >= 0):
            conflict = groups.conflicts[groups.conflict[positions[i]]]
            named = listing([ids[p] for p in conflict.first], conflict.rows)
            found[CONFLICT][i] = f"labels {conflict.labels} on {conflict.rows} rows: {named}"
        for i in np.flatnonzero(groups.leak_into[positions] >= 0):
            copy = groups.leak_into[positions[i]]
            found[LEAK][i] = f"also in {SPLIT_NAMES[int(self.keys.split[copy])]} as {ids[copy]}"
        for name, copies in ((EXACT_COPY_OF, groups.exact_copy_of), (NEAR_COPY_OF, groups.near_copy_of)):
            for i in np.flatnonzero(copies[positions] >= 0):
                found[name][i] = ids[copies[positions[i]]]
        noisy = np.fromiter(self.noise, np.int64, len(self.noise))
        for i in np.flatnonzero(np.isin(positions, noisy)):
            found[LABEL_ISSUE][i] = self.noise[int(positions[i])]
        return found

    def positions(self) -> np.ndarray:
        """The positions of the rows that have a finding."""
        groups = self.groups
        arrays = (groups.conflict, groups.leak_into, groups.exact_copy_of, groups.near_copy_of)
        found = [np.flatnonzero(a >= 0) for a in arrays]
        return np.unique(np.concatenate([*found, np.fromiter(self.noise, np.int64, len(self.noise))]))


def _findings(table: Table, keys: RowKeys, labels: list[str], noise: ValidateConfig | None) -> _Findings:
    """Group findings over all rows; with `noise` (the validate section), label noise on the learnable rows."""
    groups = group_findings(keys)
    keys.drop_hashes()
    codes = [keys.labels.values.index(label) for label in labels if label in keys.labels.values]
    checked = np.zeros(0, np.int64)
    if noise is not None:
        learnable = np.flatnonzero(keys.visible & np.isin(keys.label, codes))
        checked = rows_to_check(learnable, keys.label[learnable], noise.label_noise)
    rows = gather(table, np.union1d(groups.referenced(), checked), [ROW_ID, TEXT])
    suspected: dict[int, str] = {}
    if noise is not None and len(checked):
        texts = rows[TEXT].loc[checked]
        named = keys.labels.series(keys.label[checked]).astype(str).set_axis(checked)
        found = suspected_labels(texts, named, labels, noise.label_noise, population=len(learnable))
        suspected = {int(p): why for p, why in found.dropna().items()}
    return _Findings(keys, groups, suspected, rows[ROW_ID])


@dataclass
class _BatchVerdict:
    """What the row suite said about one batch of the raw table."""

    batch: pd.DataFrame  # the rows as read
    flagged: dict[str, list[str]]  # rule -> ids of the rows it flagged, in read order
    rows: pd.DataFrame  # at least the flagged rows with their derived columns, indexed by row id


def _pandas_verdicts(
    validator: Validator,
    checks: list[Rule],
    table: Table,
    findings: _Findings,
    counter: TokenCounter,
    data: DataConfig,
    task: Task,
) -> Iterator[_BatchVerdict]:
    """The row suite on each batch in this process: one Data Docs page per batch."""
    judge = validator.suite("rows", checks, key=ROW_ID)
    types, tag_columns = (None, []) if task == "sequence_classification" else (list(data.labels), list(TAG_DERIVED))
    start = 0
    for batch in table.batches():
        rows = add_features(batch, data.label_map, counter, findings.columns(start, len(batch)), types)
        # Only the columns the rules read.
        results = judge(rows[[ROW_ID, TEXT, *DERIVED, *tag_columns]])
        flagged = {rule.name: flagged_keys(results[rule.name]) for rule in checks}
        yield _BatchVerdict(batch, flagged, rows.set_index(ROW_ID, drop=False))
        start += len(batch)


def _spark_verdicts(
    validator: Validator,
    checks: list[Rule],
    table: Table,
    findings: _Findings,
    counter: TokenCounter,
    data: DataConfig,
    spark: SparkConfig,
    url: str,
    task: Task,
) -> Iterator[_BatchVerdict]:
    """The row suite on Spark, over the whole table at once (one Data Docs page); then, batch by batch,
    the flagged rows' derived columns for their reasons, by the same code on the driver."""
    from tasks.lib.validation.spark import flagged_on_spark

    types = None if task == "sequence_classification" else list(data.labels)
    named = findings.positions()
    ids = gather(table, named, [ROW_ID])[ROW_ID]
    found = pd.DataFrame(findings.at(named), index=pd.Index(ids.to_numpy(), name=ROW_ID))
    flagged = flagged_on_spark(validator, checks, url, table.rows, found, counter, data, spark, types)
    start = 0
    for batch in table.batches():
        mine = {name: batch[ROW_ID][batch[ROW_ID].isin(rule_ids)].tolist() for name, rule_ids in flagged.items()}
        at = np.flatnonzero(batch[ROW_ID].isin(set().union(*mine.values())).to_numpy())
        picked = batch.iloc[at]
        rows = add_features(picked, data.label_map, counter, findings.at(start + at), types)
        yield _BatchVerdict(batch, mine, rows.set_index(ROW_ID, drop=False))
        start += len(batch)


def _judge_rows(
    checks: list[Rule],
    verdicts: Iterator[_BatchVerdict],
    rows_in_table: int,
    data: DataConfig,
    config: ValidateConfig,
    keep: Callable[[pd.DataFrame], None],
) -> tuple[Outcome, np.ndarray]:
    """The row suite's verdicts, batch by batch: each rule's count, each flagged row's reasons, the rows
    set aside per policy, the quarantine records; the rows that go on are handed to `keep`. Returns the
    outcome and the mask of the rows that went on."""
    outcome = Outcome()
    flagged_rows = dict.fromkeys((rule.name for rule in checks), 0)
    went_on = np.ones(rows_in_table, dtype=bool)
    start = 0
    for verdict in verdicts:
        batch = verdict.batch
        # The ids this batch's rules flagged, and of those the rows that do not go on: row ids are
        # matched against these, not against every id flagged so far.
        flagged_here: set[str] = set()
        removed_here: set[str] = set()
        repaired_here: set[str] = set()
        for rule in checks:
            policy = getattr(config.rules, rule.name)
            flagged = verdict.flagged[rule.name]
            flagged_rows[rule.name] += len(flagged)
            done = "; repaired" if policy == "repair" else ""
            for row in verdict.rows.loc[flagged].to_dict(orient="records"):
                reason = f"{rule.name}: {_detail(rule.name, row, data)}{done}"
                outcome.reasons.setdefault(row[ROW_ID], []).append(reason)
            flagged_here.update(flagged)
            if policy == "repair":
                repaired_here.update(flagged)
            elif policy != "warn":
                removed_here.update(flagged)
        outcome.removed |= removed_here
        removed = batch[ROW_ID].isin(removed_here).to_numpy()
        went_on[start : start + len(batch)] = ~removed
        kept = batch[~removed]
        labels = map_labels(kept[LABEL], data.label_map)
        if repaired_here:  # tags_iob: repair (the only rule with that policy)
            labels = labels.where(~kept[ROW_ID].isin(repaired_here), kept[LABEL].map(repair_iob))
        keep(kept.assign(**{LABEL: labels}).reset_index(drop=True))
        outcome.kept_rows += len(kept)
        outcome.records += _records(batch, flagged_here, outcome)
        start += len(batch)
    for rule in checks:
        count = flagged_rows[rule.name]
        policy = getattr(config.rules, rule.name)
        outcome.rules[rule.name] = RuleOutcome(rule.name, "row", policy, rule.demands, not count, rows=count)
    return outcome, went_on


def _judge_dataset(
    validator: Validator,
    kept: Profile,
    baseline: Profile | None,
    data: DataConfig,
    config: ValidateConfig,
    outcome: Outcome,
    task: Task,
) -> None:
    """Dataset rules on the rows that remain: size, class shares, imbalance, drift."""
    gx = validator.gx
    classes = _class_table(kept, list(data.labels))
    present = classes["rows"][classes["rows"] > 0]
    statistics, drift_notes = _drift(kept, baseline, data, config)
    values = {
        "min_rows": kept.rows,
        "min_class_share": float(classes["share"].min()),
        "max_imbalance_ratio": float(present.max() / present.min()) if len(present) else 0.0,
        **statistics,
    }
    table = pd.DataFrame([{"rows": values["min_rows"], "imbalance_ratio": values["max_imbalance_ratio"], **statistics}])
    class_checks = class_rules(gx, config, task)
    results = {
        **validator.suite("classes", class_checks, key="label")(classes),
        **validator.suite("dataset", dataset_rules(gx, config, measured=statistics))(table),
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
    source: Table | pd.DataFrame,
    data: DataConfig,
    config: ValidateConfig,
    counter: TokenCounter,
    baseline: Table | pd.DataFrame | None = None,
    docs: Path | None = None,
    dataset_rules: bool = True,
    keep: Callable[[pd.DataFrame], None] | None = None,
    spark_url: str | None = None,
    task: Task = "sequence_classification",
) -> Outcome:
    """Run the row rules, apply their policies, then the dataset rules on the rows that remain.

    Args:
        source: the raw table (tasks.lib.data.readers schema), in memory or as a Table read in batches.
        data: the `data` section (label set and map).
        config: the `validate` section (bounds, policies, dataset limits, drift).
        counter: counts each text's tokens (features.TokenCounter).
        baseline: the last accepted (validated) dataset, for drift; None on a first run.
        docs: where to build the Data Docs site (None: no docs).
        dataset_rules: False judges rows only (a batch of new data on its own).
        keep: takes the accepted rows, batch by batch; None collects them in `Outcome.kept`.
        spark_url: where Spark's executors read `source` (the same rows, in a file they can reach):
            the row suite runs on Spark (`validate.spark`); None runs it in this process.
        task: `token_classification` judges each row's tags against its words and the entity types
            (data.labels), and the class rules and drift count entities.
    """
    table = as_table(source)
    validator = Validator(import_gx(), docs)
    # Label noise is judged on a whole dataset only: a model learns nothing from one small batch.
    # Its model predicts one label per text: a sentence's tags need a tagger (not built yet).
    noise = dataset_rules and config.rules.label_noise != "off" and task == "sequence_classification"
    keys = row_keys(table, data.label_map)
    findings = _findings(table, keys, list(data.labels), config if noise else None)
    checks = row_rules(validator.gx, data, config, noise, task)
    if spark_url is not None:
        verdicts = _spark_verdicts(validator, checks, table, findings, counter, data, config.spark, spark_url, task)
    else:
        verdicts = _pandas_verdicts(validator, checks, table, findings, counter, data, task)
    kept_batches: list[pd.DataFrame] = []
    outcome, went_on = _judge_rows(checks, verdicts, table.rows, data, config, keep or kept_batches.append)
    if keep is None:
        outcome.kept = pd.concat(kept_batches, ignore_index=True) if kept_batches else pd.DataFrame()
    if dataset_rules:
        kept = _profile(keys.labels, keys.label[went_on], keys.length[went_on], task)
        accepted = None if baseline is None else profile(as_table(baseline), task)
        _judge_dataset(validator, kept, accepted, data, config, outcome, task)
    validator.build_docs()
    return outcome
