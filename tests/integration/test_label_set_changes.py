"""Label-set changes end to end, on really trained tiny models
(docs/guides/gates-and-registry.md#when-the-label-set-changes).

Production predicts negative/positive. The same reviews then arrive labelled 0/1:
validation and the gate refuse them and propose the data.label_map that the
production model's own predictions suggest; confirmed, the run compares with
production as usual. A neutral class is then added: refused until
`gate.label_set_change: allow`, then judged on value thresholds only, and the
change shows in the lineage, the history, `registry list`, /health and /predict.
"""

import json
import random
import re

import pandas as pd
import pytest
import yaml

from tasks.apps.cli import main
from tasks.lib.config import load_params
from tasks.lib.data.demo_data import DOMAINS, generate_reviews
from tasks.lib.storage.registry import Registry
from tasks.stages import augment, evaluate, export, gate, ingest, promote, quantize, reference, split, train, validate
from tests.support.repo import deep_merge, repo_params, tiny_overrides

TO_GATE = (validate, split, augment, train, evaluate, export, quantize, gate)
NAMED = ["negative", "positive"]


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    overrides = deep_merge(
        tiny_overrides(tiny_model_dir),
        {
            "data": {"demo": {"rows": 1200}},
            "augment": {"synonym": {"ratio": 0.0}, "backtranslation": {"ratio": 0.0}},
            "train": {"epochs": 3, "learning_rate": 0.002},
            "gate": {
                "change_test": "interval",
                "metrics": {"accuracy": {"min": 0.6, "change": {"min": -0.01}}, "ece": {"max": 0.3}},
                "slices": {"*": {"accuracy": {"change": {"min": -0.1}}}},
            },
        },
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))
    return tmp_path


def update_params(root, changes: dict):
    """Edit params.yaml as a person would (keys in `changes` replace, nested), and load it."""
    file = root / "params.yaml"
    values = yaml.safe_load(file.read_text())
    for section, keys in changes.items():
        values[section].update(keys)
    file.write_text(yaml.safe_dump(values))
    return load_params(root)


def proposed(text: str) -> dict:
    """The params.yaml change a report proposes (its ```yaml block)."""
    found = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert found, f"no proposal in:\n{text}"
    return yaml.safe_load(found.group(1))


def neutral_statements(rows: int, seed: int) -> list[str]:
    """Distinct factual sentences with no opinion in them: a third class."""
    rng = random.Random(seed)
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    facts = ["arrived on {day}", "was ordered on {day}", "is sold in {n} sizes", "came in a box of {n}"]
    found: set[str] = set()
    while len(found) < rows:
        items, aspects = DOMAINS[rng.choice(list(DOMAINS))]
        fact = rng.choice(facts).format(day=rng.choice(days), n=rng.randrange(2, 40))
        found.add(
            f"The {rng.choice(items)} {fact}; the {rng.choice(aspects)} is described on page {rng.randrange(99)}."
        )
    return sorted(found)


@pytest.mark.slow
def test_renamed_labels_get_a_proposed_map_and_a_new_class_needs_an_explicit_allow(workspace, capsys):
    from fastapi.testclient import TestClient

    from tasks.apps.http_service import create_app
    from tasks.lib.inference.production_model import ProductionModel

    params = load_params(workspace)
    for stage in (ingest, *TO_GATE, reference, promote):
        stage.run(params)
    registry = Registry(params.path("registry"))
    assert registry.production()["version"] == "v0001" and registry.labels("v0001") == NAMED
    demo = params.data.demo

    # 1. The same reviews labelled 0/1: validation refuses them and proposes the map the
    #    production model's own predictions suggest. Nothing is applied.
    generate_reviews(demo.rows, demo.label_noise, demo.seed, ("0", "1")).to_csv(workspace / "numeric.csv", index=False)
    params = update_params(workspace, {"data": {"source": "numeric.csv"}})
    ingest.run(params)
    accepted = params.path("validated").read_bytes()
    with pytest.raises(validate.ValidationFailed) as refused:
        validate.run(params)
    message = str(refused.value)
    assert "label '0' is not one of ['negative', 'positive']" in message and "v0001 classified" in message
    the_map = {"data": {"labels": NAMED, "label_map": {"0": "negative", "1": "positive"}}}
    assert proposed(message) == the_map
    assert params.path("validated").read_bytes() == accepted
    assert proposed((params.path("reports") / "validation.md").read_text()) == the_map

    # 2. Trained under the numeric names anyway: the gate refuses with the same proposal.
    params = update_params(workspace, {"data": {"labels": ["0", "1"]}})
    for stage in TO_GATE[:-1]:
        stage.run(params)
    with pytest.raises(gate.GateRejected) as rejected:
        gate.run(params)
    report = str(rejected.value)
    assert "### Label set changed" in report and "gate.label_set_change is refuse" in report
    assert proposed(report) == the_map
    verdict = json.loads((params.path("metrics") / "gate.json").read_text())
    assert not verdict["passed"] and verdict["label_set_change"] == {"previous": NAMED, "current": ["0", "1"]}
    assert registry.list_versions() == ["v0001"]

    # 3. The proposal confirmed (and longer training): compared with production as usual, promoted.
    params = update_params(workspace, {**the_map, "train": {"epochs": 8}})
    for stage in (*TO_GATE, reference, promote):
        stage.run(params)
    verdict = json.loads((params.path("metrics") / "gate.json").read_text())
    assert verdict["passed"] and verdict["label_set_change"] is None
    assert {rule["name"]: rule["status"] for rule in verdict["rules"]}["accuracy change"] == "pass"
    assert registry.production()["version"] == "v0002" and registry.production()["label_set_change"] is None

    # 4. A class added: refused without the setting (no map to propose: nothing was removed)...
    named = generate_reviews(demo.rows, demo.label_noise, demo.seed, ("negative", "positive"))
    neutral = pd.DataFrame({"text": neutral_statements(500, demo.seed), "label": "neutral"})
    pd.concat([named, neutral]).to_csv(workspace / "three.csv", index=False)
    three = ["negative", "positive", "neutral"]
    params = update_params(
        workspace, {"data": {"source": "three.csv", "labels": three, "label_map": {}}, "train": {"epochs": 4}}
    )
    ingest.run(params)
    for stage in TO_GATE[:-1]:
        stage.run(params)
    with pytest.raises(gate.GateRejected) as rejected:
        gate.run(params)
    report = str(rejected.value)
    assert "added ['neutral']" in report and "```yaml" not in report
    validation = json.loads((params.path("metrics") / "validate.json").read_text())
    assert "data.labels is" in validation["rules"]["label_drift"]["note"]

    # ...and with it, judged on value thresholds only: a floor for every class (`recall.*`) covers the
    # new one too. (The tiny model learns neutral easily, sentiment barely beside it: no class reaches 0.99.)
    rules = {"accuracy": {"min": 0.5, "change": {"min": -0.01}}, "recall.*": {"min": 0.99}}
    params = update_params(workspace, {"gate": {"label_set_change": "allow", "metrics": rules}})
    with pytest.raises(gate.GateRejected) as rejected:
        gate.run(params)
    assert re.search(r"Failed: recall\.(negative|positive|neutral) is", str(rejected.value))
    verdict = json.loads((params.path("metrics") / "gate.json").read_text())
    assert {"recall.negative", "recall.positive", "recall.neutral"} <= {rule["name"] for rule in verdict["rules"]}
    rules = {"accuracy": {"min": 0.5, "change": {"min": -0.01}}, "recall.neutral": {"min": 0.8}}
    params = update_params(workspace, {"gate": {"metrics": rules}})
    gate.run(params)
    reference.run(params)
    promote.run(params)
    verdict = json.loads((params.path("metrics") / "gate.json").read_text())
    status = {rule["name"]: rule["status"] for rule in verdict["rules"]}
    assert verdict["passed"] and status["recall.neutral"] == "pass"
    assert status["accuracy change"] == "not judged"
    record = registry.production()
    assert record["version"] == "v0003" and record["labels"] == three
    assert record["label_set_change"] == {"previous": NAMED, "current": three}
    move = [event for event in registry.events() if event["event"] == "promote"][-1]
    assert move["labels"] == {"from": NAMED, "to": three} and "label set changed" in move["reason"]
    card = (registry.versions / "v0003" / "README.md").read_text()
    assert "The label set changed" in card

    capsys.readouterr()
    assert main(["--root", str(workspace), "registry", "list"]) == 0
    listing = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert listing == {"v0001": "negative,positive", "v0002": "negative,positive", "v0003": "negative,positive,neutral"}

    # Serving: /health shows the label set; a client that lists only the old labels gets 409, not a new label.
    with TestClient(create_app(ProductionModel(params.path("registry")), params.serve)) as client:
        health = client.get("/health").json()
        assert health["version"] == "v0003" and health["labels"] == three
        texts = ["The kettle arrived on Monday; the design is described on page 3."]
        answer = client.post("/predict", json={"texts": texts, "labels": NAMED})
        assert answer.status_code == 409 and answer.json()["labels"] == three and answer.json()["version"] == "v0003"
        answer = client.post("/predict", json={"texts": texts, "labels": three})
        assert answer.status_code == 200 and set(answer.json()["predictions"][0]["probabilities"]) == set(three)
