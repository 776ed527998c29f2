"""Stage `gate`: every rule that a candidate must pass before promotion.

Value thresholds (accuracy, ONNX and int8 agreement with PyTorch, int8
accuracy drop) and, once a production model exists, a change threshold: the
production model is re-scored on this run's test split, so both are measured
on the same data. A failed rule stops the run with a report that says which
rule failed and by how much.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.config import GateConfig, Params, PipelineError
from tasks.io import LABEL, TEXT, read_json, read_table, write_json, write_text
from tasks.onnx_model import OnnxClassifier
from tasks.quantize import INT8_FILE
from tasks.registry import Registry


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


def production_accuracy(production: dict[str, Any], test: Any) -> float:
    """Accuracy of the served production model on this run's test split."""
    model = OnnxClassifier(Path(production["path"]), INT8_FILE)
    predicted = model.predict(list(test[TEXT]))
    return sum(p == t for p, t in zip(predicted, test[LABEL])) / len(test)


def rules(config: GateConfig, evaluate: dict[str, Any], export: dict[str, Any], quantize: dict[str, Any],
          production_acc: float | None) -> list[Rule]:
    """The rules for one candidate, from its stage metrics and production's accuracy (if any)."""
    found = [
        Rule("min_accuracy", evaluate["accuracy"], config.min_accuracy, "min"),
        Rule("min_onnx_agreement", export["label_agreement"], config.min_onnx_agreement, "min"),
        Rule("min_int8_agreement", quantize["label_agreement"], config.min_int8_agreement, "min"),
        Rule("max_int8_accuracy_drop", round(evaluate["accuracy"] - quantize["accuracy"], 6),
             config.max_int8_accuracy_drop, "max"),
    ]
    if production_acc is not None:
        found.append(Rule("max_drop_vs_production", round(production_acc - quantize["accuracy"], 6),
                          config.max_drop_vs_production, "max"))
    return found


def render(checked: list[Rule], production: dict[str, Any] | None, production_acc: float | None) -> str:
    """The Markdown report a person reads."""
    passed = all(rule.passed for rule in checked)
    lines = [f"## Gate: {'PASSED' if passed else 'REJECTED'}", ""]
    if production is None:
        lines.append("No production model yet: this run bootstraps the registry if it passes.")
    else:
        lines.append(f"Production {production['version']} re-scored on this test split: accuracy {production_acc:.4f}.")
    lines += ["", "| rule | value | threshold | result | margin |", "|---|---|---|---|---|"]
    for rule in checked:
        sign = ">=" if rule.kind == "min" else "<="
        lines.append(f"| {rule.name} | {rule.value:.4f} | {sign} {rule.threshold:.4f} | "
                     f"{'pass' if rule.passed else 'FAIL'} | {rule.margin:+.4f} |")
    failed = [rule for rule in checked if not rule.passed]
    if failed:
        lines += ["", "Failed: " + "; ".join(
            f"{r.name} is {r.value:.4f}, {'below' if r.kind == 'min' else 'above'} {r.threshold:.4f} by "
            f"{abs(r.margin):.4f}" for r in failed)]
    return "\n".join(lines) + "\n"


def run(params: Params) -> None:
    """Stage entry point: write metrics/gate.json and reports/gate.md; raise if any rule fails."""
    metrics = params.path("metrics")
    production = Registry(params.path("registry")).production()
    production_acc = None
    if production is not None:
        production_acc = round(production_accuracy(production, read_table(params.path("test_split"))), 6)
    checked = rules(params.gate, read_json(metrics / "evaluate.json"), read_json(metrics / "export.json"),
                    read_json(metrics / "quantize.json"), production_acc)
    passed = all(rule.passed for rule in checked)
    report = render(checked, production, production_acc)
    write_json(metrics / "gate.json", {
        "passed": passed,
        "production_version": production["version"] if production else None,
        "production_accuracy": production_acc,
        "rules": [{**asdict(rule), "passed": rule.passed, "margin": round(rule.margin, 6)} for rule in checked],
    })
    write_text(params.path("reports") / "gate.md", report)
    if not passed:
        raise GateRejected(report)
    print(report)
