"""Training a token classifier: subword labels, and the stages from CoNLL text to a saved tagger."""

import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoConfig, AutoTokenizer

from tasks.lib.config import load_params
from tasks.lib.entity_metrics import entity_counts, scores
from tasks.lib.models import torch_word_logits
from tasks.lib.sentences import spans, tag_list
from tasks.lib.training.trainer import encode_words
from tasks.stages import augment, evaluate, ingest, split, train, validate
from tests.conftest import deep_merge, repo_params, tiny_overrides
from tests.data.corpus import NER, SENTENCES, conll_bytes

TAGS = tag_list(["PER", "ORG", "LOC", "MISC"])


def test_each_word_labels_its_first_subword_only(tiny_model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = pd.DataFrame({"text": ["Nikolaus van der Pas told Brussels"], "label": ["B-PER I-PER I-PER I-PER O B-LOC"]})
    (row,) = encode_words(tokenizer, frame, {tag: i for i, tag in enumerate(TAGS)}, max_length=64)
    pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert len(pieces) > 8  # special tokens, and words cut into subwords ('nikolaus' is not one piece)
    scored = [(piece, TAGS[label]) for piece, label in zip(pieces, row["labels"], strict=True) if label != -100]
    assert [tag for _, tag in scored] == ["B-PER", "I-PER", "I-PER", "I-PER", "O", "B-LOC"]
    assert next(piece for piece, _ in scored) == pieces[1]  # the first subword of the first word
    assert all(not piece.startswith("##") for piece, _ in scored)


def test_the_stages_train_a_tagger_that_finds_the_entities(tiny_model_dir: Path, tmp_path: Path):
    (tmp_path / "ner").mkdir()
    (tmp_path / "ner" / "train.conll").write_bytes(conll_bytes(SENTENCES[:160]))
    (tmp_path / "ner" / "valid.conll").write_bytes(conll_bytes(SENTENCES[160:]))
    overrides = deep_merge(
        tiny_overrides(tiny_model_dir),
        {
            **NER,
            "data": {**NER["data"], "source": "ner"},
            "validate": {"min_rows": 30, "rules": {"length_drift": "warn", "label_drift": "warn"}},
            "augment": {"synonym": {"ratio": 0.0}, "mentions": {"ratio": 0.3}},
            "train": {"learning_rate": 3e-3, "epochs": 4, "batch_size": 16},
        },
    )
    (tmp_path / "params.yaml").write_text(json.dumps(deep_merge(repo_params(), overrides)))
    params = load_params(tmp_path)
    for stage in (ingest, validate, split, augment, train):
        stage.run(params)
    metrics = json.loads((params.path("metrics") / "train.json").read_text())
    assert metrics["best_val_f1"] > 0.8, metrics  # the template sentences are easy; chance is near 0
    saved = AutoConfig.from_pretrained(params.path("model"))
    assert [saved.id2label[i] for i in range(len(TAGS))] == TAGS
    assert saved.architectures == ["BertForTokenClassification"]
    # The saved tagger, asked word by word, scores the validation split as training did.
    val = pd.read_parquet(params.path("val_split"))
    sentences = [text.split(" ") for text in val["text"]]
    logits = torch_word_logits(params.path("model"), sentences, batch_size=7, max_length=params.train.max_length)
    predicted = [[TAGS[i] for i in sentence.argmax(axis=1)] for sentence in logits]
    gold = [label.split(" ") for label in val["label"]]
    f1 = scores(entity_counts(gold, predicted, ["PER", "ORG", "LOC", "MISC"]))["micro"]["f1"]
    assert f1 == pytest.approx(metrics["best_val_f1"], abs=1e-6)
    # Evaluation on the test sentences the split carved.
    evaluate.run(params)
    report = json.loads((params.path("metrics") / "evaluate.json").read_text())
    low, high = report["interval"]["f1"]
    assert low <= report["f1"] <= high and report["f1"] > 0.8 and report["accuracy"] > 0.9
    assert set(report["per_type"]) == {"PER", "ORG", "LOC", "MISC"} and report["words_cut"] == 0
    test = pd.read_parquet(params.path("test_split"))
    assert report["n"] == len(test) == report["slices"]["entities:some"]["n"] + report["slices"]["entities:none"]["n"]
    pairs = pd.read_csv(params.path("reports") / "confusion.csv")  # one row per entity, as the plot draws it
    gold_entities = sum(len(spans(label.split(" "))) for label in test["label"])
    assert (pairs["actual"] != "(none)").sum() == gold_entities
    assert (pairs["actual"] == pairs["predicted"]).mean() > 0.8
