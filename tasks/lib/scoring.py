"""Metrics of one or two models on the same rows, overall and per slice, with bootstrap intervals.

Two models (candidate, production) are scored on the same bootstrap
resamples, so the interval of their difference is paired: it reflects how
much the difference itself varies, which is narrower than two separate
intervals would suggest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tasks.lib.config import EvaluateConfig
from tasks.lib.metrics import as_number, bootstrap_samples, interval, metric_table
from tasks.lib.slices import slice_masks

OVERALL = "overall"


def scopes(texts: Sequence[str], config: EvaluateConfig) -> dict[str, np.ndarray]:
    """`overall` (every row) and each slice of `evaluate.slices`, as row masks."""
    return {OVERALL: np.ones(len(texts), dtype=bool), **slice_masks(texts, config.slices)}


def _relative(change: np.ndarray, base: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base != 0, change / np.abs(base), np.nan)


def score_scope(
    y_true: np.ndarray, models: Mapping[str, np.ndarray], labels: Sequence[str], config: EvaluateConfig
) -> dict[str, Any]:
    """Metrics and bootstrap intervals of each model on these rows; with two models, their difference.

    Args:
        y_true: (n,) class indices.
        models: name -> (n, k) probabilities; the first is the candidate, a second one the baseline.
    Returns:
        {"n", <name>: {metric: value}, "<name>_interval": {metric: [low, high]}, and with two
        models "change", "change_interval", "relative_change", "relative_change_interval"}.
    """
    n = len(y_true)
    result: dict[str, Any] = {"n": int(n)}
    if n == 0:
        return result
    draws = bootstrap_samples(n, config.bootstrap.resamples, config.bootstrap.seed)
    bins, confidence = config.calibration_bins, config.bootstrap.confidence
    points, samples = {}, {}
    for name, probabilities in models.items():
        points[name] = metric_table(y_true[None, :], probabilities[None, :, :], labels, bins)
        samples[name] = metric_table(y_true[draws], probabilities[draws], labels, bins)
        result[name] = {metric: as_number(values[0]) for metric, values in points[name].items()}
        result[f"{name}_interval"] = {metric: interval(values, confidence) for metric, values in samples[name].items()}
    if len(models) == 2:
        new, old = list(models)
        for key, combine in (("change", lambda a, b: a - b), ("relative_change", lambda a, b: _relative(a - b, b))):
            result[key] = {m: as_number(combine(points[new][m], points[old][m])[0]) for m in points[new]}
            result[f"{key}_interval"] = {
                m: interval(combine(samples[new][m], samples[old][m]), confidence) for m in samples[new]
            }
    return result


def score(
    texts: Sequence[str],
    y_true: np.ndarray,
    models: Mapping[str, np.ndarray],
    labels: Sequence[str],
    config: EvaluateConfig,
) -> dict[str, dict[str, Any]]:
    """`score_scope` for `overall` and every slice: scope name -> result."""
    return {
        name: score_scope(y_true[mask], {m: p[mask] for m, p in models.items()}, labels, config)
        for name, mask in scopes(texts, config).items()
    }
