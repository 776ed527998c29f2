"""Gate decisions on really trained models: bootstrap, shuffled labels rejected, a better model promoted.

The stages run through their entry points on a tiny BERT (seeded weights) that
learns the demo data in seconds: 3 epochs reach about 0.90 test accuracy, 8
epochs about 0.98, labels shuffled about 0.5 (165 test rows). Measured at
other lengths: 2 epochs 0.45 (not yet off the plateau), 4 0.90, 6 0.92, 10 and
14 0.88-0.90 (early stopping after 5 and 7): the learning-rate schedule
stretches with the epochs, so longer is not always better.
"""

import json
import re

import numpy as np
import pytest
import yaml

from tasks.lib.columns import LABEL
from tasks.lib.config import load_params
from tasks.lib.io import read_table, write_table
from tasks.lib.storage.registry import Registry
from tasks.stages import (
    augment,
    evaluate,
    export,
    gate,
    ingest,
    promote,
    quantize,
    reference,
    split,
    train,
    validate,
)
from tests.support.repo import deep_merge, repo_params, tiny_overrides

MODEL_STAGES = (augment, train, evaluate, export, quantize, gate, reference, promote)


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    overrides = deep_merge(
        tiny_overrides(tiny_model_dir),
        {
            "data": {"demo": {"rows": 1200}},
            "augment": {"synonym": {"ratio": 0.0}, "backtranslation": {"ratio": 0.0}},
            "train": {"epochs": 8, "learning_rate": 0.002},
            "gate": {
                "change_test": "interval",
                "metrics": {
                    "accuracy": {"min": 0.6, "change": {"min": -0.01}},
                    "macro_f1": {"min": 0.55, "change": {"min": -0.01}},
                    "ece": {"max": 0.3},
                },
                "slices": {"*": {"accuracy": {"change": {"min": -0.1}}}},
            },
        },
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))
    params = load_params(tmp_path)
    for stage in (ingest, validate, split):
        stage.run(params)
    return tmp_path


def train_and_gate(root, epochs: int, shuffle_labels: bool = False):
    """Retrain on the (optionally label-shuffled) train split, then gate and promote."""
    params_file = root / "params.yaml"
    values = yaml.safe_load(params_file.read_text())
    values["train"]["epochs"] = epochs
    params_file.write_text(yaml.safe_dump(values))
    params = load_params(root)
    train_split = read_table(params.path("train_split"))
    if shuffle_labels:
        shuffled = np.random.default_rng(0).permutation(train_split[LABEL].to_numpy())
        write_table(params.path("train_split"), train_split.assign(**{LABEL: shuffled}))
    try:
        for stage in MODEL_STAGES:
            stage.run(params)
    finally:
        write_table(params.path("train_split"), train_split)
    return params


def gate_result(params) -> dict:
    return json.loads((params.path("metrics") / "gate.json").read_text())


def gate_scores(params) -> dict:
    return json.loads((params.path("reports") / "gate_scores.json").read_text())


@pytest.mark.slow
def test_shuffled_labels_are_rejected_and_a_better_model_is_promoted(workspace):
    # 1. A shorter-trained first model bootstraps the registry: value thresholds only.
    params = train_and_gate(workspace, epochs=3)
    registry = Registry(params.path("registry"))
    first = gate_result(params)
    assert first["passed"] and first["production_version"] is None
    assert not any(rule["name"].endswith("change") for rule in first["rules"])
    assert registry.production()["version"] == "v0001"
    first_accuracy = first["overall"]["accuracy"]["candidate"]
    assert first_accuracy == gate_scores(params)["overall"]["candidate"]["accuracy"]

    # 2. A model trained on shuffled labels is rejected, naming the rules it fails; production stays.
    with pytest.raises(gate.GateRejected) as rejected:
        train_and_gate(workspace, epochs=8, shuffle_labels=True)
    report = str(rejected.value)
    failed = {rule["name"] for rule in gate_result(params)["rules"] if rule["status"] == "FAIL"}
    assert {"accuracy", "accuracy change", "macro_f1"} <= failed
    assert "Gate: REJECTED" in report and re.search(r"accuracy is 0\.[45]\d+, below 0\.6000 by", report)
    assert "accuracy change is -0." in report and "whole interval" in report
    assert (params.path("reports") / "gate.md").read_text() == report
    assert registry.production()["version"] == "v0001" and registry.list_versions() == ["v0001"]

    # 3. A genuinely better model (longer training) passes every change threshold and is promoted.
    params = train_and_gate(workspace, epochs=8)
    better = gate_result(params)
    assert better["passed"] and better["production_version"] == "v0001"
    overall = gate_scores(params)["overall"]
    assert better["overall"]["accuracy"]["change"] == overall["change"]["accuracy"]
    assert overall["production"]["accuracy"] == pytest.approx(first_accuracy)  # re-scored, same number
    assert overall["change"]["accuracy"] > 0.02
    assert registry.production()["version"] == "v0002"
    assert registry.stages() == {"v0001": "archived", "v0002": "production"}
    lineage = registry.production()
    assert lineage["metrics"]["gate_scores"]["negation"] == gate_scores(params)["negation"]
