"""Monitoring the served model: a window of its prediction log against the version's reference profile.

Each rule of `monitor.rules` gives one statistic and fires above its threshold:
    length_drift      text length in characters, served against training (validate's statistics)
    label_drift       predicted-label shares, served against the test split's (the same model's
                      answers on data like its training data)
    confidence_shift  Kolmogorov-Smirnov statistic of the top-class probability, served against test
    unknown_tokens    share of unknown-token-heavy texts, served minus training
    embedding_drift   ROC AUC of a classifier telling served from training texts by their sentence
                      embeddings, out of fold (0.5: indistinguishable)
    live_accuracy     the gate's test accuracy minus the upper end of live accuracy's interval
                      (from POST /feedback)

A tagger's served text has one label for these rules, the set of entity types it holds (as in
its reference profile), and its words' mean confidence and entropy; its live accuracy is entity
F1 (exact spans and types, micro over the labelled texts) against the gate's test F1.

Why a domain classifier for embeddings: it is the test Evidently applies to embeddings by
default; it sees a shift in any direction of the 384 dimensions where per-dimension tests
need a multiple-testing correction; its AUC reads the same at any window size; and its
out-of-fold scores rank the served texts by how unlike the training texts they are, the
"drifted region" the review queue draws from. Embeddings and unknown tokens need the texts
(monitor.log_text); without them those rules are reported as not computed, never as passed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.lib.artifacts import CLASSIFIER_FILE, TOKENIZER_FILE
from tasks.lib.config import MonitorRule, Params, StatisticRule
from tasks.lib.evaluation.metrics import entropy
from tasks.lib.monitoring.prediction_log import FEEDBACK, PREDICTIONS, latest_feedback, log_location, read_log
from tasks.lib.monitoring.reference_profile import (
    REFERENCE_FILE,
    ReferenceProfile,
    read_profile,
    sentence_embeddings,
    unknown_shares,
)
from tasks.lib.storage.registry import Registry, RegistryError
from tasks.lib.training.models import resolve_base_model
from tasks.lib.validation.drift import label_drift, length_drift

# Served texts embedded per run at most (a seeded sample beyond): the domain classifier's AUC
# is as informative on a few thousand as on all, and embedding costs CPU-seconds per thousand.
MAX_EMBEDDED = 5000
DRIFTED_FILE = "drifted.parquet"  # the embedded served texts and their drift score, for the review queue


class Finding(BaseModel):
    """One rule's outcome in one monitoring run."""

    rule: str
    statistic: str
    value: float | None  # None: not computed (`note` says why)
    threshold: float
    policy: str
    fired: bool
    note: str = ""


class LiveAccuracy(BaseModel):
    labelled: int  # served texts of this version with a true label
    # What `accuracy` measures: a classifier's accuracy, or a tagger's entity F1 (exact spans and types,
    # micro over the labelled texts); test_accuracy is the gate's figure of the same metric.
    metric: str = "accuracy"
    accuracy: float | None = None  # None below monitor.min_feedback
    low: float | None = None
    high: float | None = None
    confidence: float
    test_accuracy: float | None  # the gate's, for the serving variant


class MonitorRun(BaseModel):
    """What one monitoring run found: written as monitor.json, summarised in the Prefect artifact."""

    at: datetime
    version: str
    window_start: datetime
    window_end: datetime
    predictions: int
    judged: bool
    note: str = ""
    findings: list[Finding]
    live_accuracy: LiveAccuracy

    @property
    def fired(self) -> list[Finding]:
        return [f for f in self.findings if f.fired]

    def summary(self) -> str:
        """One line for people: which rules fired, or that none did."""
        if not self.judged:
            return f"{self.version}: not judged: {self.note}"
        if not self.fired:
            return f"{self.version}: no rule fired over {self.predictions} predictions"
        named = ", ".join(f"{f.rule} {f.value:.3f} > {f.threshold}" for f in self.fired)
        return f"{self.version}: {named} over {self.predictions} predictions"

    def markdown(self) -> str:
        """The rules as a Markdown table (the Prefect artifact, the notification's body)."""
        window = f"{self.window_start:%Y-%m-%d %H:%M} to {self.window_end:%Y-%m-%d %H:%M} UTC"
        lines = [f"Monitoring {self.version}, {window}: {self.summary()}", ""]
        lines += ["| rule | statistic | value | threshold | policy | fired | note |", "|---|---|---|---|---|---|---|"]
        for f in self.findings:
            value = "not computed" if f.value is None else f"{f.value:.4f}"
            lines.append(
                f"| {f.rule} | {f.statistic} | {value} | {f.threshold} | {f.policy} | {'yes' if f.fired else 'no'} "
                f"| {f.note} |"
            )
        live = self.live_accuracy
        if live.accuracy is not None:
            lines += [
                "",
                f"Live {live.metric} {live.accuracy:.4f} ({live.confidence:.0%} interval {live.low:.4f} to "
                f"{live.high:.4f}) over {live.labelled} labelled texts; gate test {live.metric} {live.test_accuracy}.",
            ]
        return "\n".join(lines) + "\n"


class Window:
    """The served predictions of one version in the window, with what the rules read from them."""

    def __init__(self, answers: pd.DataFrame, labels: list[str]):
        self.answers = answers.reset_index(drop=True)
        self.labels = labels
        if "entropy" in self.answers and self.answers["entropy"].notna().all():  # a tagger's: its words' mean
            self.entropies = self.answers["entropy"].to_numpy(dtype=float)
        else:
            rows = [json.loads(p) for p in self.answers["probabilities"]] if len(self.answers) else []
            probabilities = np.array([[row.get(label, 0.0) for label in labels] for row in rows])
            self.entropies = entropy(probabilities.reshape(len(rows), len(labels)))

    @property
    def has_texts(self) -> bool:
        return "text" in self.answers and bool(self.answers["text"].notna().all()) and len(self.answers) > 0


@dataclass
class Comparison:
    """What a judged run compared, for the report's charts: nothing when the run was not judged."""

    reference: ReferenceProfile | None = None
    window: Window | None = None
    # The embedded served texts (request_id, index, text_hash, drift_score: NaN for those the
    # classifier did not score) and their embeddings, row for row.
    drifted: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["request_id", "index", "text_hash", "drift_score"])
    )
    embedded: np.ndarray | None = None


def _finding(name: str, rule: MonitorRule, statistic: str, value: float | None, note: str = "") -> Finding:
    fired = value is not None and rule.policy != "off" and value > rule.threshold
    return Finding(
        rule=name,
        statistic=statistic,
        value=value,
        threshold=rule.threshold,
        policy=rule.policy,
        fired=fired,
        note=note,
    )


def embedding_drift(reference: np.ndarray, served: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
    """Out-of-fold ROC AUC of a logistic regression telling served rows (1) from reference rows (0),
    on equal numbers of each, and every served row's out-of-fold score (NaN for rows left out)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(seed)
    n = min(len(reference), len(served))
    ref_rows = rng.choice(len(reference), n, replace=False)
    served_rows = rng.choice(len(served), n, replace=False)
    x = np.vstack([reference[ref_rows], served[served_rows]])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")[:, 1]
    per_served = np.full(len(served), np.nan)
    per_served[served_rows] = scores[n:]
    return float(roc_auc_score(y, scores)), per_served


def entity_matches(answers: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per labelled text (rows with `entities` served and `entities_true`, both as the logs hold them):
    entities both found, entities served, entities true; a match is the same start, end and type."""

    def spans(column: str) -> list[set[tuple[int, int, str]]]:
        return [{(e["start"], e["end"], e["type"]) for e in json.loads(found)} for found in answers[column]]

    served, true = spans("entities"), spans("entities_true")
    return (
        np.array([len(s & t) for s, t in zip(served, true, strict=True)], dtype=float),
        np.array([len(s) for s in served], dtype=float),
        np.array([len(t) for t in true], dtype=float),
    )


def _micro_f1(both: np.ndarray, served: np.ndarray, true: np.ndarray, axis: int = -1) -> np.ndarray:
    # 1.0 where neither found an entity: nothing to find, nothing wrongly found.
    said = served.sum(axis=axis) + true.sum(axis=axis)
    return np.where(said > 0, 2 * both.sum(axis=axis) / np.maximum(said, 1), 1.0)


def live_accuracy(params: Params, answers: pd.DataFrame, test_accuracy: float | None, tagger: bool) -> LiveAccuracy:
    """Accuracy (a tagger's: entity F1) of the version's served answers that have a true label, with a
    percentile bootstrap interval over texts (scipy.stats.bootstrap, evaluate.bootstrap's settings)
    once monitor.min_feedback exist."""
    from scipy.stats import bootstrap

    config = params.evaluate.bootstrap
    empty = LiveAccuracy(
        labelled=0,
        metric="entity F1" if tagger else "accuracy",
        confidence=config.confidence,
        test_accuracy=test_accuracy,
    )
    feedback = read_log(log_location(params.monitor, params.location("registry"), FEEDBACK))
    if feedback.empty or answers.empty:
        return empty
    truth = latest_feedback(feedback)
    columns = ["request_id", "index", "label", *(["entities"] if tagger and "entities" in truth else [])]
    joined = answers.merge(truth[columns], on=["request_id", "index"], suffixes=("", "_true"))
    if tagger:
        # Feedback sent while a classifier served (no entities) does not count.
        joined = joined.dropna(subset=["entities", "entities_true"]) if "entities_true" in joined else joined.head(0)
        data: tuple[np.ndarray, ...] = entity_matches(joined)
        statistic: Callable[..., Any] = _micro_f1
    else:
        data = ((joined["label"] == joined["label_true"]).to_numpy(dtype=float),)
        statistic = np.mean
    live = empty.model_copy(update={"labelled": len(joined)})
    if len(joined) < params.monitor.min_feedback:
        return live
    interval = bootstrap(
        data,
        statistic,
        paired=tagger,
        n_resamples=config.resamples,
        confidence_level=config.confidence,
        method="percentile",
        random_state=config.seed,
    ).confidence_interval
    return live.model_copy(
        update={"accuracy": float(statistic(*data, axis=-1)), "low": float(interval.low), "high": float(interval.high)}
    )


def judge(
    params: Params, window: Window, reference: ReferenceProfile, version_folder: Path
) -> tuple[list[Finding], Comparison]:
    """Every rule of monitor.rules on the window, and what they compared."""
    rules = params.monitor.rules
    served = window.answers
    findings = []

    def statistic_rule(name: str, rule: StatisticRule, value: Any) -> None:
        findings.append(_finding(name, rule, rule.statistic, None if rule.policy == "off" else value(), ""))

    statistic_rule(
        "length_drift",
        rules.length_drift,
        lambda: length_drift(
            reference.train["text_chars"].to_numpy(), served["text_chars"].to_numpy(), rules.length_drift.statistic
        ),
    )
    statistic_rule(
        "label_drift",
        rules.label_drift,
        lambda: label_drift(reference.test["label"], served["label"], window.labels, rules.label_drift.statistic),
    )
    if rules.confidence_shift.policy == "off":
        findings.append(_finding("confidence_shift", rules.confidence_shift, "ks", None, "off"))
    else:
        from scipy.stats import ks_2samp

        shift = float(ks_2samp(reference.test["confidence"], served["confidence"]).statistic)
        note = f"mean entropy {window.entropies.mean():.3f} served, {reference.test['entropy'].mean():.3f} test"
        findings.append(_finding("confidence_shift", rules.confidence_shift, "ks", shift, note))

    compared = Comparison(reference, window)
    no_texts = "needs the served texts: monitor.log_text is false"
    if rules.unknown_tokens.policy == "off":
        findings.append(_finding("unknown_tokens", rules.unknown_tokens, "share change", None, "off"))
    elif not window.has_texts:
        findings.append(_finding("unknown_tokens", rules.unknown_tokens, "share change", None, no_texts))
    else:
        heavy = params.monitor.unknown_heavy
        served_share = float(np.mean(unknown_shares(list(served["text"]), version_folder / TOKENIZER_FILE) >= heavy))
        train_share = float(np.mean(reference.train["unknown_share"].to_numpy() >= heavy))
        note = f"{served_share:.3f} of served texts, {train_share:.3f} of training texts"
        findings.append(
            _finding("unknown_tokens", rules.unknown_tokens, "share change", served_share - train_share, note)
        )
    if rules.embedding_drift.policy == "off":
        findings.append(_finding("embedding_drift", rules.embedding_drift, "domain classifier AUC", None, "off"))
    elif not window.has_texts:
        findings.append(_finding("embedding_drift", rules.embedding_drift, "domain classifier AUC", None, no_texts))
    else:
        sample = served.sample(n=min(len(served), MAX_EMBEDDED), random_state=params.split.seed)
        embedded = sentence_embeddings(list(sample["text"]), resolve_base_model(reference.embedding_model, params.root))
        auc, scores = embedding_drift(reference.embeddings(), embedded, params.split.seed)
        compared.drifted = sample[["request_id", "index", "text_hash"]].assign(drift_score=scores)
        compared.embedded = embedded
        note = f"{len(sample)} served texts against {len(reference.train)} training texts"
        findings.append(_finding("embedding_drift", rules.embedding_drift, "domain classifier AUC", auc, note))
    return findings, compared


def nothing_to_monitor(params: Params) -> str | None:
    """Why a monitoring run has nothing to judge (no version is production yet), or None.

    Raises:
        RegistryError: the registry cannot be read, or its pointer is damaged (that is a failure, not a skip).
    """
    registry = Registry(params.location("registry"))
    if registry.production() is None:
        return f"skipped: {registry.url} has no production version yet, so nothing is served to monitor"
    return None


def monitor_traffic(
    params: Params, window_hours: float | None = None, since: datetime | None = None
) -> tuple[MonitorRun, Comparison]:
    """One monitoring run over the production version's traffic since `since`, else its last
    `window_hours` (default monitor.window_hours).

    Returns:
        The run's record and what it compared.
    Raises:
        RegistryError: there is no production version.
        ReferenceError: the production version has no reference profile.
    """
    registry = Registry(params.location("registry"))
    record = registry.production()
    if record is None:
        raise RegistryError(f"{registry.url}: no production version to monitor (promote one first)")
    version = record["version"]
    end = datetime.now(UTC)
    start = since or end - timedelta(hours=window_hours or params.monitor.window_hours)
    tagger = json.loads(registry.read_text(version, CLASSIFIER_FILE) or "{}").get("task") == "token_classification"
    overall = ((record.get("metrics") or {}).get("gate") or {}).get("overall", {})
    test_accuracy = overall.get("f1" if tagger else "accuracy", {}).get("candidate")
    answers = read_log(log_location(params.monitor, params.location("registry"), PREDICTIONS))
    if not answers.empty:
        answers = answers[answers["version"] == version]
    live = live_accuracy(params, answers, test_accuracy, tagger)
    if not answers.empty:
        answers = answers[(answers["time"] >= start) & (answers["time"] <= end)]
    base = {"at": datetime.now(UTC), "version": version, "window_start": start, "window_end": end}
    if len(answers) < params.monitor.min_window:
        note = (
            f"{len(answers)} predictions of {version} in the window, fewer than monitor.min_window "
            f"({params.monitor.min_window})"
        )
        run = MonitorRun(**base, predictions=len(answers), judged=False, note=note, findings=[], live_accuracy=live)
        return run, Comparison()
    folder = registry.fetch(version)  # only when judged: from object storage it downloads the version
    reference = read_profile(folder / REFERENCE_FILE)
    # A tagger's label is the set of entity types a text holds (entity_signature): those seen are the labels.
    labels = None if tagger else registry.labels(version)
    window = Window(answers, labels or sorted(set(reference.test["label"]) | set(answers["label"])))
    findings, compared = judge(params, window, reference, folder)
    live_rule = params.monitor.rules.live_accuracy
    if live_rule.policy == "off":
        findings.append(_finding("live_accuracy", live_rule, "test minus live (upper)", None, "off"))
    elif live.accuracy is None or live.high is None or test_accuracy is None:
        note = f"{live.labelled} labelled served texts, fewer than monitor.min_feedback ({params.monitor.min_feedback})"
        findings.append(_finding("live_accuracy", live_rule, "test minus live (upper)", None, note))
    else:
        note = f"live {live.accuracy:.4f} [{live.low:.4f}, {live.high:.4f}], test {test_accuracy:.4f}"
        findings.append(
            _finding("live_accuracy", live_rule, "test minus live (upper)", test_accuracy - live.high, note)
        )
    run = MonitorRun(**base, predictions=len(answers), judged=True, findings=findings, live_accuracy=live)
    return run, compared
