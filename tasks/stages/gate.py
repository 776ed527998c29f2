"""Stage `gate`: every rule a candidate must pass before promotion, and which variant serves.

1. Both ONNX graphs agree with PyTorch (`gate.min_onnx_agreement`).
2. Each serving variant the quantize stage measured passes `gate.serving`
   against PyTorch; the fastest passing one is the candidate.
3. The candidate and the production model are scored here, in this run, on
   this run's test split (overall and per slice, paired bootstrap intervals);
   `gate.metrics` and `gate.slices` hold them to value thresholds (the
   candidate's metric) and change thresholds (candidate minus production).
4. A candidate whose labels differ from production's is refused unless
   `gate.label_set_change: allow` says the change is deliberate; then it is
   judged on value thresholds only. Refused, the report says what changed and,
   when new labels look like production's under other names (by how the
   production model classifies their rows), proposes the data.label_map.
A failed rule stops promotion; the report names each rule, its value and bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tasks.lib.artifacts import (
    GATE_REPORT_FILE,
    Agreement,
    ExportMetrics,
    GateMetrics,
    GateScores,
    LabelSetChange,
    ModelMeasurement,
    QuantizeMetrics,
    VariantVerdict,
    label_set_change,
)
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import GateConfig, MetricRules, Params, ServingRules
from tasks.lib.errors import PipelineError
from tasks.lib.io import read_table, write_text
from tasks.lib.label_sets import explain, propose_label_map
from tasks.lib.metrics import label_indices, softmax
from tasks.lib.onnx_classifier import OnnxClassifier
from tasks.lib.onnx_tagger import Tagger, onnx_tagger
from tasks.lib.production_model import load_served, served_labels
from tasks.lib.registry import Registry
from tasks.lib.scoring import OVERALL, score, score_taggers
from tasks.lib.sentences import as_sentences
from tasks.lib.stage_runner import run_as_script

CANDIDATE, PRODUCTION = "candidate", "production"
Status = Literal["pass", "FAIL", "not judged"]


class GateRejected(PipelineError, RuntimeError):
    """At least one gate rule failed; the message is the Markdown report."""


@dataclass(frozen=True)
class GateRule:
    """One bound on one measured value.

    With `interval` set (change_test: interval), the rule fails only when the
    whole interval lies beyond the bound. `skip` says why a rule could not be
    judged (too few rows, metric undefined); such a rule is listed, not applied.
    """

    name: str
    value: float | None
    threshold: float
    kind: Literal["min", "max"]
    interval: tuple[float, float] | None = None
    skip: str | None = None

    @property
    def status(self) -> Status:
        if self.skip is not None or self.value is None:
            return "not judged"
        if self.interval is not None:
            low, high = self.interval
            beyond = high < self.threshold if self.kind == "min" else low > self.threshold
        else:
            beyond = self.value < self.threshold if self.kind == "min" else self.value > self.threshold
        return "FAIL" if beyond else "pass"

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    @property
    def margin(self) -> float | None:
        """How far inside (+) or outside (-) the bound the value is."""
        if self.value is None:
            return None
        return self.value - self.threshold if self.kind == "min" else self.threshold - self.value

    def describe_failure(self) -> str:
        side = "below" if self.kind == "min" else "above"
        text = f"{self.name} is {self.value:.4f}, {side} {self.threshold:.4f} by {abs(self.margin or 0):.4f}"
        if self.interval is not None:
            text += f" (whole interval {self.interval[0]:.4f} to {self.interval[1]:.4f} {side} it)"
        return text

    def as_json(self) -> dict[str, Any]:
        margin = self.margin
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "kind": self.kind,
            "interval": list(self.interval) if self.interval else None,
            "status": self.status,
            "skip": self.skip,
            "margin": None if margin is None else round(margin, 6),
        }


def _agreement(found: Agreement) -> float:
    """A classifier's label agreement; a tagger's agreement by entity spans."""
    return found.label_agreement if found.span_agreement is None else found.span_agreement


def onnx_rules(config: GateConfig, export: ExportMetrics) -> list[GateRule]:
    """Both ONNX graphs against PyTorch on the test split (a tagger's: by entity spans)."""
    return [
        GateRule(
            f"min_onnx_agreement ({graph}{', entity spans' if parity.span_agreement is not None else ''})",
            _agreement(parity),
            config.min_onnx_agreement,
            "min",
        )
        for graph, parity in export.graphs().items()
    ]


def variant_rules(config: ServingRules, measured: ModelMeasurement) -> list[GateRule]:
    """What one serving variant must show against PyTorch, at batch 1 and at batch size (a tagger's
    agreement is by entity spans, and its entity F1 may drop by at most `max_entity_f1_drop`)."""
    found = [
        GateRule("agreement b1", _agreement(measured.agreement_b1), config.min_agreement, "min"),
        GateRule("agreement batch", _agreement(measured.agreement_batch), config.min_agreement, "min"),
        GateRule("accuracy drop b1", measured.accuracy_drop_b1, config.max_accuracy_drop, "max"),
        GateRule("accuracy drop batch", measured.accuracy_drop_batch, config.max_accuracy_drop, "max"),
    ]
    if measured.entity_f1_drop_b1 is not None and measured.entity_f1_drop_batch is not None:
        found += [
            GateRule("entity F1 drop b1", measured.entity_f1_drop_b1, config.max_entity_f1_drop, "max"),
            GateRule("entity F1 drop batch", measured.entity_f1_drop_batch, config.max_entity_f1_drop, "max"),
        ]
    if config.max_size_ratio is not None:
        found.append(GateRule("size ratio", measured.size_ratio, config.max_size_ratio, "max"))
    return found


def choose_variant(config: ServingRules, quantize: QuantizeMetrics) -> tuple[str | None, dict[str, list[GateRule]]]:
    """The fastest variant (by `config.prefer`) whose rules all pass, or None; and every variant's rules."""
    models = quantize.variants()
    checked = {name: variant_rules(config, measured) for name, measured in models.items()}
    passing = [name for name, found in checked.items() if not any(rule.failed for rule in found)]
    if config.prefer == "latency":
        return min(passing, key=lambda name: models[name].p50_ms, default=None), checked
    return max(passing, key=lambda name: models[name].batch_per_s, default=None), checked


def _bounds(rules: Any) -> list[tuple[float, Literal["min", "max"]]]:
    return [(bound, kind) for kind in ("min", "max") if (bound := getattr(rules, kind)) is not None]


def scope_rules(
    scope: str,
    by_metric: dict[str, MetricRules],
    scored: dict[str, Any],
    change_test: str,
    min_rows: int,
    uncompared: str | None = None,
) -> list[GateRule]:
    """Value and change thresholds of one scope (overall or a slice) against its scores.

    Args:
        uncompared: why there is a production model but no comparison with it: its
            change thresholds are then listed as not judged.
    """
    prefix = "" if scope == OVERALL else f"{scope}: "
    skip = None
    if scope != OVERALL and scored["n"] < min_rows:
        skip = f"{scored['n']} rows < evaluate.slices.min_rows {min_rows}"
    rules = []
    for metric, config in by_metric.items():
        value = scored.get(CANDIDATE, {}).get(metric)
        why = skip or (None if value is not None else "undefined on these rows")
        rules += [GateRule(f"{prefix}{metric}", value, bound, kind, skip=why) for bound, kind in _bounds(config)]
        if config.change is not None and uncompared is not None:
            key = "relative change" if config.change.relative else "change"
            rules += [
                GateRule(f"{prefix}{metric} {key}", None, bound, kind, skip=uncompared)
                for bound, kind in _bounds(config.change)
            ]
        if config.change is None or "change" not in scored:
            continue
        key = "relative_change" if config.change.relative else "change"
        change = scored[key].get(metric)
        low, high = scored[f"{key}_interval"].get(metric, (None, None))
        use_interval = change_test == "interval" and low is not None and high is not None
        why = skip or (None if change is not None else "undefined on these rows")
        rules += [
            GateRule(
                f"{prefix}{metric} {key.replace('_', ' ')}",
                change,
                bound,
                kind,
                interval=(low, high) if use_interval else None,
                skip=why,
            )
            for bound, kind in _bounds(config.change)
        ]
    return rules


def slice_config(config: GateConfig, scope: str) -> dict[str, MetricRules]:
    """The rules of one slice: "*"'s, with each bound the slice names itself taking precedence."""
    general, specific = config.slices.get("*", {}), config.slices.get(scope, {})
    merged = dict(general)
    for metric, rules in specific.items():
        own = {key: value for key, value in rules if value is not None}
        merged[metric] = general[metric].model_copy(update=own) if metric in general else rules
    return merged


def each_class(by_metric: dict[str, MetricRules], measured: Iterable[str]) -> dict[str, MetricRules]:
    """`recall.*` becomes a rule on every class's recall; a class named on its own keeps its own rules."""
    measured = list(measured)
    expanded: dict[str, MetricRules] = {}
    for metric, rules in by_metric.items():
        if metric.endswith(".*"):
            for name in measured:
                if name.startswith(metric[:-1]):
                    expanded.setdefault(name, rules)
        else:
            expanded[metric] = rules
    return expanded


def metric_rules(
    config: GateConfig, scored: dict[str, dict[str, Any]], min_rows: int, uncompared: str | None = None
) -> list[GateRule]:
    """`gate.metrics` on the overall scores, then `gate.slices` on each slice's."""
    measured = scored[OVERALL][CANDIDATE]
    rules = scope_rules(
        OVERALL, each_class(config.metrics, measured), scored[OVERALL], config.change_test, min_rows, uncompared
    )
    for scope, found in scored.items():
        if scope != OVERALL:
            by_metric = each_class(slice_config(config, scope), measured)
            rules += scope_rules(scope, by_metric, found, config.change_test, min_rows, uncompared)
    return rules


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


def run(params: Params) -> None:
    """Stage entry point: write metrics/gate.json and reports/gate.md; raise if any rule fails."""
    quantize = QuantizeMetrics.read(params)
    rules = onnx_rules(params.gate, ExportMetrics.read(params))
    chosen, variants = choose_variant(params.gate.serving, quantize)
    registry = Registry(params.location("registry"))
    production = registry.production()
    served = load_served(registry.fetch(production["version"])) if production else None
    change = None
    if served is not None:
        change = label_set_change(served_labels(served), params.data.labels)
        if served.info.task != params.task and change is None:  # the same names, another task: not comparable
            change = LabelSetChange(previous=served_labels(served), current=list(params.data.labels))
    label_set = None
    if production is not None and served is not None and change is not None:
        label_set = judge_label_set(params, change, production, served, quantize.batch_size)
    model_file = quantize.models[chosen].file if chosen else None
    scored = None
    if model_file is not None:
        compared = served if change is None else None
        if params.task == "token_classification":
            assert compared is None or isinstance(compared, Tagger)  # the same task: `change` is None
            scored = score_tagger(params, model_file, compared, quantize.batch_size)
        else:
            assert compared is None or isinstance(compared, OnnxClassifier)
            scored = score_candidate(params, model_file, compared, quantize.batch_size)
        uncompared = "the label set changed" if change is not None else None
        rules += metric_rules(params.gate, scored, params.evaluate.slices.min_rows, uncompared)
    passed = gate_passed(chosen, rules, label_set)
    report = render(rules, variants, chosen, quantize, params, production, scored, label_set)
    GateMetrics.parse(
        {
            "passed": passed,
            "serving_variant": chosen,
            "model_file": model_file,
            "production_version": production["version"] if production else None,
            "labels": params.data.labels,
            "label_set_change": change.model_dump() if change else None,
            "rules": [rule.as_json() for rule in rules],
            "variants": {
                name: VariantVerdict.parse(
                    {"passed": not any(r.failed for r in found), "rules": [r.as_json() for r in found]}, name
                )
                for name, found in variants.items()
            },
            "overall": headline(scored),
        },
        "gate verdict",
    ).write(params)
    # Every metric of both models per slice, with intervals: too many numbers for `dvc metrics show`.
    GateScores(scopes=scored).write(params)
    write_text(params.path("reports") / GATE_REPORT_FILE, report)
    if not passed:
        raise GateRejected(report)
    print(report)


if __name__ == "__main__":
    run_as_script(run)
