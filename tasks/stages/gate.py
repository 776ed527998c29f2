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

import logging

from tasks.lib.artifacts import (
    GATE_REPORT_FILE,
    ExportMetrics,
    GateMetrics,
    GateScores,
    LabelSetChange,
    QuantizeMetrics,
    VariantVerdict,
    label_set_change,
)
from tasks.lib.config import Params
from tasks.lib.evaluation.gate import (
    GateRejected,
    gate_passed,
    headline,
    judge_label_set,
    render,
    score_candidate,
    score_tagger,
)
from tasks.lib.evaluation.gate_rules import choose_variant, metric_rules, onnx_rules
from tasks.lib.inference.onnx_classifier import OnnxClassifier
from tasks.lib.inference.onnx_tagger import Tagger
from tasks.lib.inference.production_model import load_served, served_labels
from tasks.lib.io import write_text
from tasks.lib.stage_runner import run_as_script
from tasks.lib.storage.registry import Registry

log = logging.getLogger(__name__)


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
    log.info(report)


if __name__ == "__main__":
    run_as_script(run)
