"""The gate's judgement: the candidate and production scored on this run's test split, a changed
label set judged, and the Markdown report a person reads (also the Prefect artifact and the
failure message). The rules themselves are in tasks/lib/evaluation/gate_rules.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.lib.artifacts import LabelSetChange, QuantizeMetrics
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params
from tasks.lib.data.sentences import as_sentences
from tasks.lib.errors import PipelineError
from tasks.lib.evaluation.gate_rules import CANDIDATE, PRODUCTION, GateRule
from tasks.lib.evaluation.label_sets import explain, propose_label_map
from tasks.lib.evaluation.metrics import label_indices, softmax
from tasks.lib.evaluation.scoring import OVERALL, score, score_taggers
from tasks.lib.inference.onnx_classifier import OnnxClassifier
from tasks.lib.inference.onnx_tagger import Tagger, onnx_tagger
from tasks.lib.io import read_table


class GateRejected(PipelineError, RuntimeError):
    """At least one gate rule failed; the message is the Markdown report."""


def aligned_probabilities(
    model: OnnxClassifier, texts: Sequence[str], labels: Sequence[str], batch_size: int, who: str
) -> np.ndarray:
    """Probabilities with columns in the order of `labels`; a model with other labels cannot be compared."""
    own = model.info.labels
    if sorted(own) != sorted(labels):
        raise GateRejected(
            f"## Gate: REJECTED\n\nThe {who} model predicts labels {own}, this run's test split "
            f"has {list(labels)}: they cannot be compared on the same rows.\n"
        )
    probabilities = softmax(model.logits(texts, batch_size))
    return probabilities[:, [own.index(label) for label in labels]]


@dataclass(frozen=True)
class LabelSetVerdict:
    """The report's section on a changed label set, and why it stops promotion (None: allowed)."""

    lines: list[str]
    failure: str | None


def judge_label_set(
    params: Params,
    change: LabelSetChange,
    production: dict[str, Any],
    served: OnnxClassifier | Tagger,
    batch_size: int,
) -> LabelSetVerdict:
    """Allow a changed label set only by `gate.label_set_change: allow`; refused, say what to do.

    When some labels were removed and others added, production's model classifies the
    test rows of the added ones: a consistent pairing is proposed as a data.label_map.
    """
    version = production["version"]
    lines = [
        "### Label set changed",
        "",
        f"Production {version} predicts {change.previous}; this candidate {change.current} ({change.difference()}).",
        "",
    ]
    if params.gate.label_set_change == "allow":
        lines.append(
            "`gate.label_set_change: allow`: a deliberate change. Production cannot predict the same classes, so "
            "change thresholds are not judged; the candidate is judged on value thresholds (per-class floors such "
            "as `recall.*` cover every class, new ones included). The new version's lineage and the registry "
            "history record the change."
        )
        return LabelSetVerdict(lines, None)
    # Renamed classes can be told by how production classifies their rows; renamed entity types
    # (or a switched task) are not proposed.
    classifiers = params.task == "sequence_classification"
    if change.added and change.removed and classifiers and isinstance(served, OnnxClassifier):
        test = read_table(params.path("test_split"))
        texts = {label: list(test.loc[test[LABEL] == label, TEXT]) for label in change.added}
        proposal = propose_label_map(
            texts, change.removed, lambda batch: served.predict(batch, batch_size), version, params.split.seed
        )
        lines += [explain(proposal, params.data.labels, params.data.label_map), ""]
    lines.append(
        "If the label set changes on purpose (a class added, removed or renamed for good), set "
        "`gate.label_set_change: allow`: the candidate is then judged on value thresholds only, and "
        "clients see the new labels only with the new version."
    )
    failure = f"the label set changed ({change.describe()}) and gate.label_set_change is refuse"
    return LabelSetVerdict(lines, failure)


def gate_passed(chosen: str | None, rules: list[GateRule], label_set: LabelSetVerdict | None) -> bool:
    """A serving variant was chosen, no rule failed, and no refused label-set change stands in the way."""
    refused = label_set is not None and label_set.failure is not None
    return chosen is not None and not any(rule.failed for rule in rules) and not refused


def _number(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def _rule_row(rule: GateRule) -> str:
    sign = ">=" if rule.kind == "min" else "<="
    spread = f"{rule.interval[0]:+.4f} to {rule.interval[1]:+.4f}" if rule.interval else ""
    result = rule.status if rule.skip is None else f"not judged ({rule.skip})"
    return (
        f"| {rule.name} | {_number(rule.value)} | {spread} | {sign} {rule.threshold:.4f} | {result} | "
        f"{_number(rule.margin, sign=True)} |"
    )


def _scores_table(scored: dict[str, dict[str, Any]], metric: str, confidence: float) -> list[str]:
    paired = "change" in scored[OVERALL]
    head = "| scope | rows | candidate | interval |" + (" production | change | change interval |" if paired else "")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for scope, found in scored.items():
        if found["n"] == 0:
            lines.append(f"| {scope} | 0 |" + " |" * (head.count("|") - 3))
            continue
        low, high = found[f"{CANDIDATE}_interval"][metric]
        row = f"| {scope} | {found['n']} | {_number(found[CANDIDATE][metric])} | {_number(low)}-{_number(high)} |"
        if paired:
            c_low, c_high = found["change_interval"][metric]
            row += (
                f" {_number(found[PRODUCTION][metric])} | {_number(found['change'][metric], True)} | "
                f"{_number(c_low, True)} to {_number(c_high, True)} |"
            )
        lines.append(row)
    return [f"### Test split {metric} by slice ({confidence:.0%} bootstrap intervals, paired)", "", *lines]


def render(
    rules: list[GateRule],
    variants: dict[str, list[GateRule]],
    chosen: str | None,
    quantize: QuantizeMetrics,
    params: Params,
    production: dict[str, Any] | None,
    scored: dict[str, dict[str, Any]] | None,
    label_set: LabelSetVerdict | None = None,
) -> str:
    """The Markdown report a person reads (also the Prefect artifact and the failure message)."""
    passed = gate_passed(chosen, rules, label_set)
    lines = [f"## Gate: {'PASSED' if passed else 'REJECTED'}", ""]
    if production is None:
        lines.append(
            "No production model yet: change thresholds do not apply; this run bootstraps the registry if it passes."
        )
    elif label_set is not None:
        lines += label_set.lines
    else:
        served = production.get("variant", "variant not recorded")
        lines.append(
            f"Candidate `{chosen}` and production {production['version']} (`{served}`) scored in this "
            "run on the same test split."
        )
    lines += ["", "| rule | value | interval | bound | result | margin |", "|---|---|---|---|---|---|"]
    lines += [_rule_row(rule) for rule in rules]
    if any(rule.interval is not None for rule in rules):
        lines += [
            "",
            (
                f"Rules with an interval (`gate.change_test: interval`, "
                f"{params.evaluate.bootstrap.confidence:.0%} paired bootstrap) fail only when the whole "
                "interval is beyond the bound: worse, and by more than noise."
            ),
        ]
    config = params.gate.serving
    measure = "batch-1 p50 latency" if config.prefer == "latency" else "batched throughput"
    columns = [rule.name for rule in next(iter(variants.values()), [])]
    lines += [
        "",
        f"### Serving variants (the fastest by {measure} of those that pass is the candidate)",
        "",
        "| variant | p50 ms | rows/s | size | " + " | ".join(columns) + " | verdict |",
        "|---" * (len(columns) + 5) + "|",
    ]
    for name, found in variants.items():
        m = quantize.models[name]
        cells = " | ".join(f"{r.value:.4f} {'FAIL' if r.failed else 'ok'}" for r in found)
        verdict = "**serves**" if name == chosen else ("rejected" if any(r.failed for r in found) else "passes")
        lines.append(f"| {name} | {m.p50_ms:.2f} | {m.batch_per_s:.0f} | {m.size_ratio:.1%} | {cells} | {verdict} |")
    if scored is not None:
        metric = "f1" if params.task == "token_classification" else "accuracy"
        lines += ["", *_scores_table(scored, metric, params.evaluate.bootstrap.confidence)]
    failed = [rule.describe_failure() for rule in rules if rule.failed]
    if label_set is not None and label_set.failure is not None:
        failed.insert(0, label_set.failure)
    if chosen is None:
        failed.append(
            "no serving variant passes gate.serving: "
            + "; ".join(
                f"{name}: " + ", ".join(r.describe_failure() for r in found if r.failed)
                for name, found in variants.items()
            )
        )
    if failed:
        lines += ["", "Failed: " + "; ".join(failed)]
    return "\n".join(lines) + "\n"


def headline(scored: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, float | None]]:
    """Overall metrics (not per class) of candidate and production and their change: the DVC metrics."""
    if scored is None:
        return {}
    overall = scored[OVERALL]
    return {
        metric: {key: overall[key][metric] for key in (CANDIDATE, PRODUCTION, "change") if key in overall}
        for metric in overall[CANDIDATE]
        if "." not in metric
    }


def score_candidate(
    params: Params, model_file: str, served: OnnxClassifier | None, batch_size: int
) -> dict[str, dict[str, Any]]:
    """Candidate (and production's `served` model, when compared) on this run's test split, overall and per slice."""
    test = read_table(params.path("test_split"))
    texts, labels = list(test[TEXT]), params.data.labels
    y_true = label_indices(list(test[LABEL]), labels)
    candidate = OnnxClassifier(params.path("quantized"), model_file)
    models = {CANDIDATE: aligned_probabilities(candidate, texts, labels, batch_size, CANDIDATE)}
    if served is not None:
        models[PRODUCTION] = aligned_probabilities(served, texts, labels, batch_size, PRODUCTION)
    return score(texts, y_true, models, labels, params.evaluate)


def score_tagger(params: Params, model_file: str, served: Tagger | None, batch_size: int) -> dict[str, dict[str, Any]]:
    """`score_candidate` for token classifiers: entity metrics, overall and per slice of the sentences."""
    test = read_table(params.path("test_split"))
    sentences, gold = as_sentences(test[TEXT]), as_sentences(test[LABEL])
    models = {CANDIDATE: onnx_tagger(params.path("quantized"), model_file)}
    if served is not None:
        models[PRODUCTION] = served
    probabilities = {
        name: (model.info.labels, softmax(model.logits(sentences, batch_size))) for name, model in models.items()
    }
    return score_taggers(gold, probabilities, list(params.data.labels), params.evaluate)
