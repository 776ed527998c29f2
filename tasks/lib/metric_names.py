"""The names of what evaluation measures: metrics and slices, for config to check gate rules against.

A leaf module (it imports nothing of the project), so that loading params.yaml does not pull in the
scorers: editing how entities are scored (tasks/lib/evaluation/entity_metrics.py) makes stale only the
stages that score, not every stage that reads its config.
"""

from __future__ import annotations

from collections.abc import Sequence

# Text classification (tasks/lib/evaluation/metrics.py computes them).
OVERALL_METRICS = ("accuracy", "macro_f1", "weighted_f1", "ece")
BINARY_METRICS = ("roc_auc",)
PER_CLASS_METRICS = ("precision", "recall", "f1")

# Token classification (tasks/lib/evaluation/entity_metrics.py computes them).
ENTITY_METRICS = ("f1", "precision", "recall", "macro_f1", "accuracy", "ece")
PER_TYPE_METRICS = ("precision", "recall", "f1")
# Sentences by length in words (low, high inclusive; None: no upper bound), and with or without an entity.
LENGTH_SLICES = (("length:1-10", 1, 10), ("length:11-25", 11, 25), ("length:26+", 26, None))
SENTENCE_SLICES = (*(name for name, _, _ in LENGTH_SLICES), "entities:some", "entities:none")


def metric_names(labels: Sequence[str]) -> list[str]:
    """Every metric name a text classifier of `labels` is scored on."""
    names = list(OVERALL_METRICS) + (list(BINARY_METRICS) if len(labels) == 2 else [])
    return names + [f"{metric}.{label}" for metric in PER_CLASS_METRICS for label in labels]


def entity_metric_names(types: Sequence[str]) -> list[str]:
    """Every metric name a tagger of `types` is scored on."""
    return [*ENTITY_METRICS, *(f"{metric}.{kind}" for metric in PER_TYPE_METRICS for kind in types)]
