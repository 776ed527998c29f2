"""Metrics against scikit-learn, slices, bootstrap intervals and the gate's metric rules."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from tasks.lib.errors import ConfigError
from tasks.lib.evaluation.gate_rules import GateRule, metric_rules
from tasks.lib.evaluation.metrics import metric_table, point_metrics
from tasks.lib.evaluation.scoring import OVERALL, score
from tasks.lib.evaluation.slices import slice_masks
from tasks.lib.metric_names import metric_names

LABELS = ["negative", "positive"]


def random_predictions(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y] * rng.integers(0, 2, (n, 1))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probabilities.round(2)  # rounding makes ties, which ROC-AUC must count half


@pytest.mark.parametrize("classes", [2, 3])
def test_metrics_match_scikit_learn(classes):
    labels = [f"c{i}" for i in range(classes)]
    y, probabilities = random_predictions(500, classes, seed=classes)
    predicted = probabilities.argmax(axis=1)
    found = point_metrics(y, probabilities, labels, bins=10)
    assert set(found) == set(metric_names(labels))
    assert found["accuracy"] == pytest.approx(accuracy_score(y, predicted), abs=1e-6)
    for average in ("macro", "weighted"):
        assert found[f"{average}_f1"] == pytest.approx(f1_score(y, predicted, average=average), abs=1e-6)
    precision, recall, f1, _ = precision_recall_fscore_support(y, predicted, labels=range(classes), zero_division=0)
    for i, label in enumerate(labels):
        assert (found[f"precision.{label}"], found[f"recall.{label}"], found[f"f1.{label}"]) == pytest.approx(
            (precision[i], recall[i], f1[i]), abs=1e-6
        )
    if classes == 2:
        assert found["roc_auc"] == pytest.approx(roc_auc_score(y, probabilities[:, 1]), abs=1e-6)
    else:
        assert "roc_auc" not in found


def test_expected_calibration_error_by_hand():
    # Two bins used: 0.9-confident rows right 3 of 4 times, 0.6-confident rows right 1 of 2.
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    y = np.array([0, 0, 0, 1, 1, 0])
    expected = 4 / 6 * abs(0.75 - 0.9) + 2 / 6 * abs(0.5 - 0.6)
    assert point_metrics(y, probabilities, LABELS, bins=10)["ece"] == pytest.approx(expected, abs=1e-6)


def test_undefined_metrics_are_none_not_nan():
    y = np.zeros(5, dtype=int)  # one class only: ROC-AUC is undefined
    assert point_metrics(y, np.full((5, 2), 0.5), LABELS, bins=10)["roc_auc"] is None


def test_slices_by_length_and_by_pattern_or_keyword(make_params):
    config = make_params(
        {
            "evaluate": {
                "slices": {
                    "length_words": [3],
                    "named": {"negation": {"pattern": r"\bnot\b|n't\b"}, "contrast": {"keywords": ["but"]}},
                }
            }
        }
    ).evaluate.slices
    texts = ["not good", "It isn't bad, BUT long winded and slow", "butter is fine", "fine"]
    masks = slice_masks(texts, config)
    assert {name: mask.tolist() for name, mask in masks.items()} == {
        "words_1_3": [True, False, True, True],
        "words_4_up": [False, True, False, False],
        "negation": [True, True, False, False],
        "contrast": [False, True, False, False],
    }


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate(make_params):
    config = make_params().evaluate
    y, probabilities = random_predictions(300, 2, seed=5)
    texts = ["a review"] * 300
    first = score(texts, y, {"candidate": probabilities}, LABELS, config)[OVERALL]
    again = score(texts, y, {"candidate": probabilities}, LABELS, config)[OVERALL]
    assert first == again
    low, high = first["candidate_interval"]["accuracy"]
    assert low < first["candidate"]["accuracy"] < high and high - low < 0.15


def test_paired_change_interval_is_narrower_than_either_model_alone(make_params):
    config = make_params().evaluate
    y, production = random_predictions(400, 2, seed=1)
    candidate = production.copy()
    flip = np.arange(400) % 40 == 0  # the candidate differs from production on 10 rows only
    candidate[flip] = candidate[flip][:, ::-1]
    found = score(["x"] * 400, y, {"candidate": candidate, "production": production}, LABELS, config)[OVERALL]
    width = np.diff(found["change_interval"]["accuracy"])[0]
    assert width < np.diff(found["candidate_interval"]["accuracy"])[0] / 2
    change = found["candidate"]["accuracy"] - found["production"]["accuracy"]
    assert found["change"]["accuracy"] == pytest.approx(change, abs=1e-6)


def sliced_predictions(
    negation_right: float, other_right: float, n: int = 400, seed: int = 0
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts (every 4th has a negation) with predictions right on about the given share of each part."""
    texts = ["this is not good at all" if i % 4 == 0 else "this is a good one" for i in range(n)]
    y = np.random.default_rng(0).integers(0, 2, n)
    rng = np.random.default_rng(seed + 1)
    negation = np.arange(n) % 4 == 0
    right = np.where(negation, rng.random(n) < negation_right, rng.random(n) < other_right)
    predicted = np.where(right, y, 1 - y)
    return texts, y, np.eye(2)[predicted] * 0.8 + 0.1


def test_a_slice_regression_blocks_even_when_overall_improves(make_params):
    params = make_params(
        {
            "gate": {
                "change_test": "interval",
                "metrics": {"accuracy": {"min": 0.5, "change": {"min": -0.01}}},
                "slices": {"negation": {"accuracy": {"min": 0.3}}},
            }
        }
    )
    texts, y, production = sliced_predictions(negation_right=0.9, other_right=0.77)
    _, _, candidate = sliced_predictions(negation_right=0.6, other_right=0.97, seed=1)
    scored = score(texts, y, {"candidate": candidate, "production": production}, LABELS, params.evaluate)
    assert scored[OVERALL]["change"]["accuracy"] > 0.02  # better overall
    rules = metric_rules(params.gate, scored, params.evaluate.slices.min_rows)
    failed = [rule.name for rule in rules if rule.failed]
    assert failed == ["negation: accuracy change"]
    assert next(r for r in rules if r.name == "accuracy change").status == "pass"


def test_change_test_interval_forgives_noise_point_does_not(make_params):
    texts, y, production = sliced_predictions(0.8, 0.8)
    # Worse on 6 rows, better on 3: 0.75 points lower, well within noise on 400 rows.
    right = production.argmax(axis=1) == y
    flips = np.concatenate([np.flatnonzero(right)[:6], np.flatnonzero(~right)[:3]])
    candidate = production.copy()
    candidate[flips] = candidate[flips][:, ::-1]
    for test, expected in (("point", "FAIL"), ("interval", "pass")):
        params = make_params({"gate": {"change_test": test, "metrics": {"accuracy": {"change": {"min": -0.005}}}}})
        scored = score(texts, y, {"candidate": candidate, "production": production}, LABELS, params.evaluate)
        rule = next(r for r in metric_rules(params.gate, scored, 30) if r.name == "accuracy change")
        assert rule.status == expected, (test, rule)


def test_small_slices_and_undefined_metrics_are_listed_not_judged(make_params):
    params = make_params({"gate": {"slices": {"contrast": {"roc_auc": {"min": 0.99}}}}})
    texts, y, probabilities = sliced_predictions(0.5, 0.9, n=60)  # 15 negation rows < min_rows 30
    scored = score(texts, y, {"candidate": probabilities}, LABELS, params.evaluate)
    rules = {rule.name: rule for rule in metric_rules(params.gate, scored, params.evaluate.slices.min_rows)}
    assert rules["negation: accuracy"].skip == "15 rows < evaluate.slices.min_rows 30"
    assert rules["negation: accuracy"].status == "not judged" and not rules["negation: accuracy"].failed
    assert rules["contrast: roc_auc"].skip  # the slice is empty
    assert not any(name.endswith("change") for name in rules)  # no production: change thresholds do not apply


def test_rule_bounds_with_and_without_interval():
    assert GateRule("x", 0.5, 0.5, "min").status == "pass" and GateRule("x", 0.6, 0.5, "max").failed
    assert GateRule("x", 0.4, 0.5, "min", interval=(0.3, 0.55)).status == "pass"  # could be noise
    assert GateRule("x", 0.4, 0.5, "min", interval=(0.3, 0.45)).failed
    assert GateRule("x", 0.6, 0.5, "max", interval=(0.51, 0.7)).failed
    assert (
        "whole interval 0.3000 to 0.4500 below it"
        in GateRule("x", 0.4, 0.5, "min", interval=(0.3, 0.45)).describe_failure()
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gate": {"metrics": {"acuracy": {"min": 0.5}}}}, r"gate\.metrics\.acuracy: unknown metric"),
        ({"gate": {"slices": {"negations": {"accuracy": {"min": 0.5}}}}}, r"gate\.slices\.negations: no such slice"),
        ({"gate": {"metrics": {"f1.neutral": {"min": 0.5}}}}, r"gate\.metrics\.f1\.neutral: unknown metric"),
        ({"gate": {"metrics": {"weighted_f1": {"change": {"relative": True}}}}}, r"weighted_f1\.change: .*give `min`"),
        ({"evaluate": {"slices": {"named": {"bad": {"pattern": "(unclosed"}}}}}, r"not a valid regex"),
        ({"evaluate": {"slices": {"length_words": [20, 10]}}}, r"bucket bounds must increase"),
    ],
)
def test_bad_gate_and_slice_params_name_the_key(make_params, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_params(overrides)


def test_per_class_metrics_vectorised_over_resamples():
    y, probabilities = random_predictions(50, 2, seed=9)
    draws = np.stack([np.arange(50), np.arange(50)[::-1]])
    table = metric_table(y[draws], probabilities[draws], LABELS, 10)
    assert table["accuracy"].shape == (2,) and table["accuracy"][0] == pytest.approx(table["accuracy"][1])
