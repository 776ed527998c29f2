"""The one test on the real MiniLM: it learns the demo task and behaves sensibly."""

import json

import pytest
import yaml

from tasks.lib.config import load_params
from tasks.lib.training.logits import torch_logits
from tasks.lib.training.models import model_labels
from tasks.stages import evaluate, ingest, split, train, validate
from tests.support.repo import deep_merge, repo_params


@pytest.mark.slow
def test_minilm_fine_tunes_offline_and_follows_sentiment(tmp_path):
    overrides = {"data": {"demo": {"rows": 1000, "label_noise": 0.0}}, "train": {"epochs": 2, "batch_size": 16}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))
    params = load_params(tmp_path)
    for stage in (ingest, validate, split):
        stage.run(params)
    # Train straight from the split: augmentation has its own tests and costs time here.
    params.path("augmented").parent.mkdir(parents=True, exist_ok=True)
    params.path("augmented").write_bytes(params.path("train_split").read_bytes())
    train.run(params)
    evaluate.run(params)
    assert json.loads((params.path("metrics") / "evaluate.json").read_text())["accuracy"] >= 0.85
    # Directional expectations: clear praise is positive, a clear complaint negative.
    texts = ["The food was excellent. I loved it.", "The staff was rude and the room was awful. Never again."]
    labels = model_labels(params.path("model"))
    predicted = [labels[i] for i in torch_logits(params.path("model"), texts, 8, 128).argmax(1)]
    assert predicted == ["positive", "negative"]
