"""Label-set changes in isolation: what changed, the proposed map, and floors for every class."""

import re

import yaml

from tasks.lib.artifacts import label_set_change
from tasks.lib.config import MetricRules
from tasks.lib.evaluation.gate_rules import each_class
from tasks.lib.evaluation.label_sets import MIN_ROWS, explain, propose_label_map

GOOD = [f"good film number {i}" for i in range(40)]
BAD = [f"bad film number {i}" for i in range(40)]


def by_word(texts: list[str]) -> list[str]:
    """A classifier that is right about these texts (the production model's part, made exact)."""
    return ["negative" if text.startswith("bad") else "positive" for text in texts]


def snippet(text: str) -> dict:
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))


def test_a_change_names_what_was_added_and_removed_and_order_is_no_change():
    assert label_set_change(["a", "b"], ["b", "a"]) is None
    change = label_set_change(["negative", "positive"], ["negative", "positive", "neutral"])
    assert change.added == ["neutral"] and change.removed == []
    assert "added ['neutral']" in change.describe() and "removed" not in change.describe()


def test_numeric_labels_pair_with_the_classes_the_production_model_gives_their_rows():
    proposal = propose_label_map({"0": BAD, "1": GOOD}, ["negative", "positive"], by_word, "v0007")
    assert proposal.complete and [(p.source, p.target, p.share) for p in proposal.pairs] == [
        ("0", "negative", 1.0),
        ("1", "positive", 1.0),
    ]
    text = explain(proposal, ["negative", "positive"], {})
    assert "v0007" in text and "| 0 | 40 | 100% | 0% | negative |" in text
    assert snippet(text) == {
        "data": {"labels": ["negative", "positive"], "label_map": {"0": "negative", "1": "positive"}}
    }


def test_a_proposal_composes_with_the_map_in_use_and_renames_the_label_set():
    # data.labels [0, 1] with `neg` already mapped to 0: after the proposal every source name maps to production's.
    proposal = propose_label_map({"0": BAD, "1": GOOD}, ["negative", "positive"], by_word, "v0001")
    assert snippet(explain(proposal, ["0", "1"], {"neg": "0"})) == {
        "data": {"labels": ["negative", "positive"], "label_map": {"neg": "negative", "0": "negative", "1": "positive"}}
    }


def test_no_map_is_proposed_without_evidence():
    # A model that calls everything positive says nothing about which label is which.
    flat = propose_label_map({"0": BAD, "1": GOOD}, ["negative", "positive"], lambda t: ["positive"] * len(t), "v1")
    assert flat.pairs == [] and "no map is proposed" in explain(flat, ["negative", "positive"], {})
    # Too few rows to judge, and a label split between classes.
    few = propose_label_map({"0": BAD[: MIN_ROWS - 1]}, ["negative", "positive"], by_word, "v1")
    mixed = propose_label_map({"x": BAD[:20] + GOOD[:20] + GOOD[:1]}, ["negative"], by_word, "v1")
    assert few.pairs == [] and mixed.pairs == []
    # A new class beside a renamed one: the renamed one is proposed, the other named as unpaired.
    partial = propose_label_map({"pos": GOOD, "neutral": BAD}, ["positive"], by_word, "v1")
    assert [(p.source, p.target) for p in partial.pairs] == [("pos", "positive")] and partial.unpaired == ["neutral"]
    assert snippet(explain(partial, ["negative", "pos", "neutral"], {}))["data"]["labels"] == [
        "negative",
        "positive",
        "neutral",
    ]


def test_a_floor_for_every_class_expands_and_a_class_named_alone_keeps_its_own():
    floor, own = MetricRules(min=0.5), MetricRules(min=0.8)
    measured = ["accuracy", "recall.a", "recall.b", "recall.c", "f1.a"]
    assert each_class({"recall.*": floor, "recall.b": own, "accuracy": own}, measured) == {
        "recall.a": floor,
        "recall.b": own,
        "recall.c": floor,
        "accuracy": own,
    }
    assert each_class({"recall.b": own, "recall.*": floor}, measured)["recall.b"] == own
