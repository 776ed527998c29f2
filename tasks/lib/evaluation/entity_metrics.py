"""Entity-level scores of token classification: exact span match, counted as seqeval counts them.

An entity is a (type, first word, last word) span of IOB2 tags (tasks.lib.data.sentences.spans, read
as seqeval reads them). A predicted entity counts only when a gold entity has the same type and
the same span. Counts are kept per sentence and per type, so scores over
any resample of the sentences (bootstrap intervals) are sums, not a rescan of the tags; seqeval
itself is the reference the tests check these against (`tests/unit/test_entity_metrics.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.lib.data.sentences import spans
from tasks.lib.inference.word_logits import sentence_tags
from tasks.lib.metric_names import LENGTH_SLICES

NONE = "(none)"  # no entity there: the row of a spurious prediction, the column of a missed entity


@dataclass
class EntityCounts:
    """Per sentence (rows) and entity type (columns): correct, predicted and gold entities; and per
    sentence the words tagged right and the words."""

    types: list[str]
    correct: np.ndarray
    predicted: np.ndarray
    gold: np.ndarray
    words_right: np.ndarray
    words: np.ndarray

    def take(self, sentences: np.ndarray) -> EntityCounts:
        """The counts of `sentences` (positions; repeats allowed, as a bootstrap draws them)."""
        return EntityCounts(
            self.types,
            *(a[sentences] for a in (self.correct, self.predicted, self.gold, self.words_right, self.words)),
        )


def entity_counts(gold: list[list[str]], predicted: list[list[str]], types: list[str]) -> EntityCounts:
    """Count each sentence's entities by type; entities of other types are not counted (validation
    keeps their tags out of the data, and a model predicts only the tags it was trained on).

    Raises:
        ValueError: a sentence's gold and predicted tags differ in length.
    """
    column = {kind: i for i, kind in enumerate(types)}
    per_type, per_sentence = (len(gold), len(types)), len(gold)
    counts = EntityCounts(
        types,
        correct=np.zeros(per_type, np.int64),
        predicted=np.zeros(per_type, np.int64),
        gold=np.zeros(per_type, np.int64),
        words_right=np.zeros(per_sentence, np.int64),
        words=np.zeros(per_sentence, np.int64),
    )
    for row, (truth, guess) in enumerate(zip(gold, predicted, strict=True)):
        if len(truth) != len(guess):
            raise ValueError(f"sentence {row}: {len(truth)} gold tags, {len(guess)} predicted")
        true_spans, guessed = set(spans(truth)), set(spans(guess))
        for target, found in (
            (counts.gold, true_spans),
            (counts.predicted, guessed),
            (counts.correct, true_spans & guessed),
        ):
            for kind, _, _ in found:
                if kind in column:
                    target[row, column[kind]] += 1
        counts.words_right[row] = sum(t == g for t, g in zip(truth, guess, strict=True))
        counts.words[row] = len(truth)
    return counts


def _ratio(top: np.ndarray | float, bottom: np.ndarray | float) -> np.ndarray:
    top, bottom = np.asarray(top, float), np.asarray(bottom, float)
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def scores(counts: EntityCounts) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per type and micro-averaged over all entities (`micro`,
    seqeval's default average), and the share of words tagged right (`accuracy`)."""
    correct, predicted, gold = (a.sum(axis=0) for a in (counts.correct, counts.predicted, counts.gold))
    result = {}
    rows = [
        *zip(counts.types, correct, predicted, gold, strict=True),
        ("micro", correct.sum(), predicted.sum(), gold.sum()),
    ]
    for name, right, said, true in rows:
        precision, recall = float(_ratio(right, said)), float(_ratio(right, true))
        f1 = float(_ratio(2 * precision * recall, precision + recall))
        result[name] = {"precision": precision, "recall": recall, "f1": f1, "support": float(true)}
    result["accuracy"] = {"value": float(_ratio(counts.words_right.sum(), counts.words.sum()))}
    return result


def bootstrap_f1(counts: EntityCounts, draws: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """The `level` interval of micro F1 over `draws` resamples of the sentences (with replacement)."""
    rng = np.random.default_rng(seed)
    n = len(counts.words)
    correct, said = counts.correct.sum(axis=1), counts.predicted.sum(axis=1) + counts.gold.sum(axis=1)
    picks = rng.integers(0, n, size=(draws, n))
    values = _ratio(2 * correct[picks].sum(axis=1), said[picks].sum(axis=1))
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def entity_pairs(gold: list[list[str]], predicted: list[list[str]], types: list[str]) -> list[tuple[str, str]]:
    """(gold type, predicted type) per entity, matched by span: a missed entity's predicted type and a
    spurious one's gold type are NONE; spans that overlap without matching are one missed and one
    spurious entity."""
    pairs: list[tuple[str, str]] = []
    known = set(types)
    for truth, guess in zip(gold, predicted, strict=True):
        true_by_span = {(s, e): kind for kind, s, e in spans(truth) if kind in known}
        guessed_by_span = {(s, e): kind for kind, s, e in spans(guess) if kind in known}
        pairs += [(kind, guessed_by_span.get(span, NONE)) for span, kind in true_by_span.items()]
        pairs += [(NONE, kind) for span, kind in guessed_by_span.items() if span not in true_by_span]
    return pairs


def span_agreement(reference: list[list[str]], other: list[list[str]], types: list[str]) -> float:
    """How well `other`'s entities match `reference`'s, exact spans and types: F1 with the reference
    as gold (1.0 when both find the same entities, and when neither finds any)."""
    counts = entity_counts(reference, other, types)
    if not counts.gold.any() and not counts.predicted.any():
        return 1.0
    return round(scores(counts)["micro"]["f1"], 6)


def logit_span_agreement(
    reference: np.ndarray, other: np.ndarray, lengths: list[int], tags: list[str], types: list[str]
) -> float:
    """`span_agreement` of two taggers' word logits (all sentences' words in order, `lengths` words each)."""
    return span_agreement(sentence_tags(reference, lengths, tags), sentence_tags(other, lengths, tags), types)


def sentence_slices(gold: list[list[str]]) -> dict[str, np.ndarray]:
    """The slices of a tagger's sentences (SENTENCE_SLICES), as masks: by length in words
    (LENGTH_SLICES) and with or without a gold entity."""
    lengths = np.array([len(tags) for tags in gold])
    has_entity = np.array([bool(spans(tags)) for tags in gold], dtype=bool)
    return {
        **{name: (lengths >= low) & (lengths <= (high or lengths.max(initial=0))) for name, low, high in LENGTH_SLICES},
        "entities:some": has_entity,
        "entities:none": ~has_entity,
    }


def slice_scores(counts: EntityCounts, gold: list[list[str]]) -> dict[str, dict[str, float]]:
    """Micro precision/recall/F1 and sentences (`n`) of each slice (`sentence_slices`; without a gold
    entity only precision means anything: each predicted entity there is spurious)."""
    found = {}
    for name, mask in sentence_slices(gold).items():
        micro = scores(counts.take(np.flatnonzero(mask)))["micro"]
        found[name] = {"n": int(mask.sum()), **{k: micro[k] for k in ("precision", "recall", "f1")}}
    return found


# What a tagger is scored on (entity_table, and the words' `ece` beside it); per type, `<metric>.<type>`.
def entity_table(counts: EntityCounts, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on each resample of the sentences (`draws`: rows of sentence positions): micro
    `f1`/`precision`/`recall`, `macro_f1` (mean of the types' F1), word `accuracy`, and `f1.<type>`,
    `precision.<type>`, `recall.<type>`. NaN where a metric is undefined: a type neither found nor
    present; recall without a gold entity; precision with neither."""
    correct, predicted, gold = (
        a[draws].sum(axis=1).astype(float) for a in (counts.correct, counts.predicted, counts.gold)
    )

    def ratios(right: np.ndarray, said: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            return {
                "precision": np.where(said > 0, right / said, np.where(true > 0, 0.0, np.nan)),
                "recall": np.where(true > 0, right / true, np.nan),
                "f1": np.where(said + true > 0, 2 * right / (said + true), np.nan),
            }

    micro = ratios(correct.sum(axis=1), predicted.sum(axis=1), gold.sum(axis=1))
    per_type = ratios(correct, predicted, gold)
    seen = ~np.isnan(per_type["f1"])
    with np.errstate(divide="ignore", invalid="ignore"):
        macro = np.where(seen.any(axis=1), np.nansum(per_type["f1"], axis=1) / seen.sum(axis=1), np.nan)
        accuracy = counts.words_right[draws].sum(axis=1) / counts.words[draws].sum(axis=1)
    table = {**micro, "macro_f1": macro, "accuracy": accuracy}
    for column, kind in enumerate(counts.types):
        table |= {f"{metric}.{kind}": values[:, column] for metric, values in per_type.items()}
    return table
