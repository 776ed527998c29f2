"""Entity-level scores against seqeval, the reference implementation, on CoNLL-2003's test split."""

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from seqeval.metrics import accuracy_score, classification_report
from seqeval.metrics.sequence_labeling import get_entities

from tasks.lib.data.sentences import spans
from tasks.lib.evaluation.entity_metrics import (
    NONE,
    bootstrap_f1,
    entity_counts,
    entity_pairs,
    entity_table,
    scores,
    span_agreement,
)
from tasks.lib.metric_names import entity_metric_names

CONLL_TEST = Path(__file__).resolve().parents[3] / "shared" / "data" / "conll2003" / "test.txt"
TYPES = ["PER", "ORG", "LOC", "MISC"]


def conll_tags() -> list[list[str]]:
    sentences, current = [], []
    for line in CONLL_TEST.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.split()[-1])
        elif current:
            sentences.append(current)
            current = []
    return [*sentences, current] if current else sentences


def corrupted(gold: list[list[str]], rate: float, seed: int) -> list[list[str]]:
    """Gold tags with `rate` of them replaced by any tag (broken IOB included), as a poor model's."""
    rng = random.Random(seed)
    tags = ["O", *(f"{prefix}-{kind}" for kind in TYPES for prefix in "BI")]
    return [[rng.choice(tags) if rng.random() < rate else tag for tag in sentence] for sentence in gold]


def test_spans_are_read_as_seqeval_reads_them():
    rng = random.Random(3)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(2000):
        sequence = [rng.choice(tags) for _ in range(rng.randint(0, 9))]
        assert spans(sequence) == get_entities(sequence), sequence


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.3])
def test_scores_equal_seqevals_on_conll_test(rate: float):
    gold = conll_tags()
    predicted = corrupted(gold, rate, seed=11)
    ours = scores(entity_counts(gold, predicted, TYPES))
    reference = classification_report(gold, predicted, output_dict=True, zero_division=0)
    for name, theirs in [*((kind, reference[kind]) for kind in TYPES), ("micro", reference["micro avg"])]:
        for metric in ("precision", "recall", "f1-score", "support"):
            assert ours[name][metric.removesuffix("-score")] == pytest.approx(theirs[metric], abs=1e-12), (name, metric)
    assert ours["accuracy"]["value"] == pytest.approx(accuracy_score(gold, predicted), abs=1e-12)


def test_bootstrap_interval_holds_the_f1_and_narrows_with_more_sentences():
    gold = conll_tags()
    counts = entity_counts(gold, corrupted(gold, 0.1, seed=5), TYPES)
    low, high = bootstrap_f1(counts, draws=500, seed=0)
    assert low < scores(counts)["micro"]["f1"] < high
    small = counts.take(np.arange(300))
    small_low, small_high = bootstrap_f1(small, draws=500, seed=0)
    assert small_high - small_low > high - low
    assert bootstrap_f1(counts, draws=500, seed=0) == (low, high)  # seeded


def test_entity_pairs_count_right_swapped_missed_and_spurious_entities():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-MISC"]]
    found = Counter(entity_pairs(gold, predicted, TYPES))
    assert found == {("PER", "PER"): 1, ("LOC", "ORG"): 1, ("ORG", NONE): 1, (NONE, "MISC"): 1}


@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_the_gates_table_gives_seqevals_scores_and_its_macro_average(rate: float):
    gold = conll_tags()[:800]
    predicted = corrupted(gold, rate, seed=3)
    counts = entity_counts(gold, predicted, TYPES)
    table = entity_table(counts, np.arange(len(gold))[None, :])
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    for metric, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
        assert table[metric][0] == pytest.approx(report["micro avg"][key])
        for kind in TYPES:
            assert table[f"{metric}.{kind}"][0] == pytest.approx(report[kind][key])
    assert table["macro_f1"][0] == pytest.approx(report["macro avg"]["f1-score"])
    assert table["accuracy"][0] == pytest.approx(accuracy_score(gold, predicted))
    assert set(table) == set(entity_metric_names(TYPES)) - {"ece"}  # ece comes from the words' probabilities
    # A type neither present nor found is undefined, not 0: the gate then skips its rules.
    empty = entity_table(entity_counts([["O", "O"]], [["O", "O"]], TYPES), np.zeros((1, 1), dtype=int))
    assert np.isnan(empty["f1.PER"][0]) and np.isnan(empty["recall"][0])


def test_span_agreement_is_the_f1_of_one_taggers_entities_against_anothers():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"]]
    assert span_agreement(gold, gold, TYPES) == 1.0
    assert span_agreement([["O", "O"]], [["O", "O"]], TYPES) == 1.0  # nothing found by either
    half = [["B-PER", "O", "O", "B-LOC"], ["O", "O"]]  # PER cut short: 1 of 2 entities the same
    assert span_agreement(gold, half, TYPES) == pytest.approx(0.5)
