"""The gate's rules: one bound on one measured value each, and how they are built from params.

ONNX parity (`gate.min_onnx_agreement`), each serving variant against PyTorch (`gate.serving`; the
fastest passing variant serves), and value and change thresholds on the candidate's scores overall
and per slice (`gate.metrics`, `gate.slices`). docs/guides/gates-and-registry.md explains them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from tasks.lib.artifacts import Agreement, ExportMetrics, ModelMeasurement, QuantizeMetrics
from tasks.lib.config import GateConfig, MetricRules, ServingRules
from tasks.lib.evaluation.scoring import OVERALL

CANDIDATE, PRODUCTION = "candidate", "production"
Status = Literal["pass", "FAIL", "not judged"]


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
    agreement is by entity spans, and its entity F1 may drop by at most `max_entity_f1_drop`), and
    the floors on what it serves."""
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
    # Floors on the whole split's figure (the batch-1 one is measured on the first latency_rows only).
    if config.min_accuracy is not None:
        found.append(GateRule("accuracy batch", measured.accuracy_batch, config.min_accuracy, "min"))
    if config.min_entity_f1 is not None and measured.entity_f1_batch is not None:
        found.append(GateRule("entity F1 batch", measured.entity_f1_batch, config.min_entity_f1, "min"))
    if config.max_size_ratio is not None:
        found.append(GateRule("size ratio", measured.size_ratio, config.max_size_ratio, "max"))
    if config.max_batch_label_changes is not None:
        # A measurement from before the figure existed counts as the worst: the rule cannot be shown to hold.
        changes = 1.0 if measured.batch_label_changes is None else measured.batch_label_changes
        found.append(GateRule("labels moved by batching", changes, config.max_batch_label_changes, "max"))
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
