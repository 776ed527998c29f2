"""Metrics of one or two models on the same rows, overall and per slice, with bootstrap intervals.

Two models (candidate, production) are scored on the same bootstrap
resamples, so the interval of their difference is paired: it reflects how
much the difference itself varies, which is narrower than two separate
intervals would suggest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.lib.config import EvaluateConfig
from tasks.lib.evaluation.entity_metrics import EntityCounts, entity_counts, entity_table, sentence_slices
from tasks.lib.evaluation.metrics import as_number, bootstrap_samples, confidence_bins, interval, metric_table
from tasks.lib.evaluation.slices import slice_masks
from tasks.lib.inference.word_logits import sentence_tags

OVERALL = "overall"


def scopes(texts: Sequence[str], config: EvaluateConfig) -> dict[str, np.ndarray]:
    """`overall` (every row) and each slice of `evaluate.slices`, as row masks."""
    return {OVERALL: np.ones(len(texts), dtype=bool), **slice_masks(texts, config.slices)}


def _relative(change: np.ndarray, base: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base != 0, change / np.abs(base), np.nan)


# (model name, draws: rows of row positions) -> metric -> its value on each draw.
Tables = Callable[[str, np.ndarray], dict[str, np.ndarray]]


def paired_scores(n: int, names: Sequence[str], tables: Tables, config: EvaluateConfig) -> dict[str, Any]:
    """Metrics and bootstrap intervals of each named model on the same `n` rows; with two, their difference.

    Args:
        names: the candidate first, a second one the baseline.
        tables: the metrics of a model on given draws of the rows.
    Returns:
        {"n", <name>: {metric: value}, "<name>_interval": {metric: [low, high]}, and with two
        models "change", "change_interval", "relative_change", "relative_change_interval"}.
    """
    result: dict[str, Any] = {"n": int(n)}
    if n == 0:
        return result
    draws = bootstrap_samples(n, config.bootstrap.resamples, config.bootstrap.seed)
    confidence = config.bootstrap.confidence
    points, samples = {}, {}
    for name in names:
        points[name] = tables(name, np.arange(n)[None, :])
        samples[name] = tables(name, draws)
        result[name] = {metric: as_number(values[0]) for metric, values in points[name].items()}
        result[f"{name}_interval"] = {metric: interval(values, confidence) for metric, values in samples[name].items()}
    if len(names) == 2:
        new, old = names
        for key, combine in (("change", lambda a, b: a - b), ("relative_change", lambda a, b: _relative(a - b, b))):
            result[key] = {m: as_number(combine(points[new][m], points[old][m])[0]) for m in points[new]}
            result[f"{key}_interval"] = {
                m: interval(combine(samples[new][m], samples[old][m]), confidence) for m in samples[new]
            }
    return result


def score_scope(
    y_true: np.ndarray, models: Mapping[str, np.ndarray], labels: Sequence[str], config: EvaluateConfig
) -> dict[str, Any]:
    """`paired_scores` of classifiers on these rows.

    Args:
        y_true: (n,) class indices.
        models: name -> (n, k) probabilities; the first is the candidate, a second one the baseline.
    """

    def tables(name: str, draws: np.ndarray) -> dict[str, np.ndarray]:
        return metric_table(y_true[draws], models[name][draws], labels, config.calibration_bins)

    return paired_scores(len(y_true), list(models), tables, config)


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


def _calibration_gaps(confidence: np.ndarray, correct: np.ndarray, lengths: Sequence[int], bins: int) -> np.ndarray:
    """(sentences x bins): per sentence and confidence bin, its words' correct count minus their
    confidence sum. Summed over any resample of the sentences, |sum| over bins / words is its ECE."""
    sentence = np.repeat(np.arange(len(lengths)), lengths)
    cell = sentence * bins + confidence_bins(confidence[None, :], bins)[0]
    gaps = np.bincount(cell, weights=correct - confidence, minlength=len(lengths) * bins)
    return gaps.reshape(len(lengths), bins)


@dataclass(frozen=True)
class _TaggerScope:
    counts: EntityCounts
    gaps: np.ndarray

    def tables(self, draws: np.ndarray) -> dict[str, np.ndarray]:
        table = entity_table(self.counts, draws)
        with np.errstate(divide="ignore", invalid="ignore"):
            table["ece"] = np.abs(self.gaps[draws].sum(axis=1)).sum(axis=1) / self.counts.words[draws].sum(axis=1)
        return table


def score_taggers(
    gold: list[list[str]],
    models: Mapping[str, tuple[list[str], np.ndarray]],
    types: list[str],
    config: EvaluateConfig,
) -> dict[str, dict[str, Any]]:
    """`paired_scores` of taggers for `overall` and each slice of the sentences
    (entity_metrics.sentence_slices): entity metrics (entity_metrics.entity_table) and the words'
    ECE, resampled by sentence.

    Args:
        models: name -> (its tags, its words' probabilities: all sentences' words x tags); candidate first.
    """
    lengths = [len(tags) for tags in gold]
    words = np.array([tag for tags in gold for tag in tags])
    scopes_of: dict[str, tuple[EntityCounts, np.ndarray]] = {}
    for name, (tags, probabilities) in models.items():
        best = probabilities.argmax(axis=1)
        correct = (np.array(tags)[best] == words).astype(np.float64)
        gaps = _calibration_gaps(probabilities.max(axis=1), correct, lengths, config.calibration_bins)
        scopes_of[name] = (entity_counts(gold, sentence_tags(probabilities, lengths, tags), types), gaps)
    result = {}
    for scope, mask in {OVERALL: np.ones(len(gold), dtype=bool), **sentence_slices(gold)}.items():
        rows = np.flatnonzero(mask)
        taken = {name: _TaggerScope(counts.take(rows), gaps[rows]) for name, (counts, gaps) in scopes_of.items()}
        result[scope] = paired_scores(len(rows), list(models), _by_name(taken), config)
    return result


def _by_name(scopes: Mapping[str, _TaggerScope]) -> Tables:
    return lambda name, draws: scopes[name].tables(draws)
