"""Stage `gate`: every rule that a candidate must pass before promotion, and which variant serves.

Value thresholds on the candidate (PyTorch accuracy, agreement of both ONNX
graphs with PyTorch); rules for each serving variant the quantize stage built
and measured (label agreement and accuracy drop against PyTorch at batch 1 and
at batch size, optionally size), of which the fastest passing one is chosen;
and, once a production model exists, a change threshold: the production model
is re-scored on this run's test split, so both are measured on the same data.
A failed rule stops the run with a report that says which rule failed and by
how much.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.benchmark import PYTORCH
from tasks.config import GateConfig, Params, PipelineError, ServingRules
from tasks.io import LABEL, TEXT, read_json, read_table, write_json, write_text
from tasks.registry import Registry
from tasks.serving import load_classifier


class GateRejected(PipelineError, RuntimeError):
    """At least one gate rule failed; the message is the Markdown report."""


@dataclass(frozen=True)
class Rule:
    name: str
    value: float
    threshold: float
    kind: str  # "min": value >= threshold; "max": value <= threshold

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.kind == "min" else self.value <= self.threshold

    @property
    def margin(self) -> float:
        """How far inside (+) or outside (-) the threshold the value is."""
        return self.value - self.threshold if self.kind == "min" else self.threshold - self.value


def production_accuracy(production: dict[str, Any], test: Any, batch_size: int) -> float:
    """Accuracy of the served production model on this run's test split."""
    model = load_classifier(Path(production["path"]))
    predicted = model.predict(list(test[TEXT]), batch_size)
    return sum(p == t for p, t in zip(predicted, test[LABEL])) / len(test)


def candidate_rules(config: GateConfig, evaluate: dict[str, Any], export: dict[str, Any]) -> list[Rule]:
    """Value thresholds on the candidate itself: PyTorch accuracy, both ONNX graphs against PyTorch."""
    return [
        Rule("min_accuracy", evaluate["accuracy"], config.min_accuracy, "min"),
        *(Rule(f"min_onnx_agreement ({graph})", export[graph]["label_agreement"], config.min_onnx_agreement, "min")
          for graph in ("exported", "optimized")),
    ]


def variant_rules(config: ServingRules, measured: dict[str, Any]) -> list[Rule]:
    """What one serving variant must show against PyTorch, at batch 1 and at batch size."""
    found = [
        Rule("agreement b1", measured["agreement_b1"]["label_agreement"], config.min_agreement, "min"),
        Rule("agreement batch", measured["agreement_batch"]["label_agreement"], config.min_agreement, "min"),
        Rule("accuracy drop b1", measured["accuracy_drop_b1"], config.max_accuracy_drop, "max"),
        Rule("accuracy drop batch", measured["accuracy_drop_batch"], config.max_accuracy_drop, "max"),
    ]
    if config.max_size_ratio is not None:
        found.append(Rule("size ratio", measured["size_ratio"], config.max_size_ratio, "max"))
    return found


def choose_variant(config: ServingRules, quantize: dict[str, Any]) -> tuple[str | None, dict[str, list[Rule]]]:
    """The fastest variant (by `config.prefer`) whose rules all pass, or None; and every variant's rules."""
    models = quantize["models"]
    checked = {name: variant_rules(config, measured) for name, measured in models.items() if name != PYTORCH}
    passing = [name for name, found in checked.items() if all(rule.passed for rule in found)]
    if config.prefer == "latency":
        return min(passing, key=lambda name: models[name]["p50_ms"], default=None), checked
    return max(passing, key=lambda name: models[name]["batch_per_s"], default=None), checked


def _rule_row(rule: Rule) -> str:
    sign = ">=" if rule.kind == "min" else "<="
    return (f"| {rule.name} | {rule.value:.4f} | {sign} {rule.threshold:.4f} | {'pass' if rule.passed else 'FAIL'} | "
            f"{rule.margin:+.4f} |")


def _failure(rule: Rule) -> str:
    side = "below" if rule.kind == "min" else "above"
    return f"{rule.name} is {rule.value:.4f}, {side} {rule.threshold:.4f} by {abs(rule.margin):.4f}"


def render(checked: list[Rule], variants: dict[str, list[Rule]], chosen: str | None, quantize: dict[str, Any],
           config: ServingRules, production: dict[str, Any] | None, production_acc: float | None) -> str:
    """The Markdown report a person reads."""
    passed = chosen is not None and all(rule.passed for rule in checked)
    lines = [f"## Gate: {'PASSED' if passed else 'REJECTED'}", ""]
    if production is None:
        lines.append("No production model yet: this run bootstraps the registry if it passes.")
    else:
        lines.append(f"Production {production['version']} re-scored on this test split: accuracy {production_acc:.4f}.")
    lines += ["", "| rule | value | threshold | result | margin |", "|---|---|---|---|---|"]
    lines += [_rule_row(rule) for rule in checked]
    measure = "batch-1 p50 latency" if config.prefer == "latency" else "batched throughput"
    columns = [rule.name for rule in next(iter(variants.values()), [])]
    lines += ["", f"### Serving variants (the fastest by {measure} of those that pass is promoted)", "",
              "| variant | p50 ms | rows/s | size | " + " | ".join(columns) + " | verdict |",
              "|---" * (len(columns) + 5) + "|"]
    for name, found in variants.items():
        m = quantize["models"][name]
        cells = " | ".join(f"{r.value:.4f} {'ok' if r.passed else 'FAIL'}" for r in found)
        verdict = "**serves**" if name == chosen else ("passes" if all(r.passed for r in found) else "rejected")
        lines.append(f"| {name} | {m['p50_ms']:.2f} | {m['batch_per_s']:.0f} | {m['size_ratio']:.1%} | {cells} | "
                     f"{verdict} |")
    failed = [_failure(rule) for rule in checked if not rule.passed]
    if chosen is None:
        failed.append("no serving variant passes gate.serving: " + "; ".join(
            f"{name}: " + ", ".join(_failure(r) for r in found if not r.passed) for name, found in variants.items()))
    if failed:
        lines += ["", "Failed: " + "; ".join(failed)]
    return "\n".join(lines) + "\n"


def run(params: Params) -> None:
    """Stage entry point: write metrics/gate.json and reports/gate.md; raise if any rule fails."""
    metrics = params.path("metrics")
    quantize = read_json(metrics / "quantize.json")
    checked = candidate_rules(params.gate, read_json(metrics / "evaluate.json"), read_json(metrics / "export.json"))
    chosen, variants = choose_variant(params.gate.serving, quantize)
    production = Registry(params.path("registry")).production()
    production_acc = None
    if production is not None:
        test = read_table(params.path("test_split"))
        production_acc = round(production_accuracy(production, test, quantize["batch_size"]), 6)
        if chosen is not None:
            checked.append(Rule("max_drop_vs_production",
                                round(production_acc - quantize["models"][chosen]["accuracy_batch"], 6),
                                params.gate.max_drop_vs_production, "max"))
    passed = chosen is not None and all(rule.passed for rule in checked)
    report = render(checked, variants, chosen, quantize, params.gate.serving, production, production_acc)
    write_json(metrics / "gate.json", {
        "passed": passed,
        "serving_variant": chosen,
        "model_file": quantize["models"][chosen]["file"] if chosen else None,
        "production_version": production["version"] if production else None,
        "production_accuracy": production_acc,
        "rules": [_as_json(rule) for rule in checked],
        "variants": {name: {"passed": all(r.passed for r in found), "rules": [_as_json(r) for r in found]}
                     for name, found in variants.items()},
    })
    write_text(params.path("reports") / "gate.md", report)
    if not passed:
        raise GateRejected(report)
    print(report)


def _as_json(rule: Rule) -> dict[str, Any]:
    return {**asdict(rule), "passed": rule.passed, "margin": round(rule.margin, 6)}
