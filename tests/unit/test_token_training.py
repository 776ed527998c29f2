"""Training a token classifier: subword labels, and the stages from CoNLL text to a saved tagger."""

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

from tasks.lib.config import PYTORCH_BASELINE, load_params
from tasks.lib.data.sentences import spans, tag_list
from tasks.lib.evaluation.entity_metrics import entity_counts, scores
from tasks.lib.inference.onnx_classifier import ClassifierInfo
from tasks.lib.inference.onnx_tagger import onnx_tagger, simple_word_spans, tagged_words, word_spans
from tasks.lib.training.logits import torch_word_logits
from tasks.lib.training.trainer import encode_words
from tasks.stages import augment, evaluate, export, gate, ingest, quantize, split, train, validate
from tests.data.corpus import NER, SENTENCES, conll_bytes
from tests.support.repo import deep_merge, repo_params, tiny_overrides

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


@pytest.fixture(scope="module")
def tagger(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A workspace whose stages ran from CoNLL text to an evaluated tagger."""
    root = tmp_path_factory.mktemp("tagger")
    (root / "ner").mkdir()
    (root / "ner" / "train.conll").write_bytes(conll_bytes(SENTENCES[:160]))
    (root / "ner" / "valid.conll").write_bytes(conll_bytes(SENTENCES[160:]))
    overrides = deep_merge(
        tiny_overrides(tiny_model_dir),
        {
            **NER,
            "data": {**NER["data"], "source": "ner"},
            "validate": {"min_rows": 30, "rules": {"length_drift": "warn", "label_drift": "warn"}},
            "augment": {"synonym": {"ratio": 0.0}, "mentions": {"ratio": 0.3}},
            "train": {"learning_rate": 3e-3, "epochs": 4, "batch_size": 16},
            "quantize": {"benchmark": {"latency_rows": 20, "warmup": 2, "rounds": 2}},
        },
    )
    (root / "params.yaml").write_text(json.dumps(deep_merge(repo_params(), overrides)))
    params = load_params(root)
    for stage in (ingest, validate, split, augment, train, evaluate):
        stage.run(params)
    return params


def test_the_stages_train_a_tagger_that_finds_the_entities(tagger: Any):
    params = tagger
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


def test_the_tagger_exports_to_onnx_and_its_int8_variants_find_pytorchs_entities(tagger: Any):
    params = tagger
    export.run(params)
    exported = json.loads((params.path("metrics") / "export.json").read_text())
    onnx_dir = params.path("onnx")
    assert ClassifierInfo.load(onnx_dir).task == "token_classification"
    for graph in ("exported", "optimized"):
        parity = exported[graph]
        assert parity["label_agreement"] > 0.999 and parity["span_agreement"] > 0.999, parity
        assert parity["max_abs_logit_diff"] < 1e-3
    # One row of logits per subword, whatever the batch and sentence length.
    test = pd.read_parquet(params.path("test_split"))
    sentences = [text.split(" ") for text in test["text"]]
    graph = onnx_tagger(onnx_dir, "model.onnx")
    one_by_one = np.concatenate([graph.logits([sentence], 1) for sentence in sentences[:9]])
    assert np.allclose(one_by_one, graph.logits(sentences[:9], 4), atol=1e-4)
    assert len(one_by_one) == sum(map(len, sentences[:9]))
    # A sentence longer than max_length: its last words get no subword and are predicted O.
    long = ["Ludwig"] * (params.train.max_length + 5)
    (words,) = graph.word_logits([long])
    assert np.isnan(words[-1]).all() and not np.isnan(words[0]).any()
    assert graph.info.labels[int(graph.logits([long])[-1].argmax())] == "O"

    quantize.run(params)
    measured = json.loads((params.path("metrics") / "quantize.json").read_text())
    assert measured["rows"] == len(test) and measured["latency_rows"] == 20
    variants = {name: m for name, m in measured["models"].items() if name != PYTORCH_BASELINE}
    assert set(variants) == set(params.quantize.variants)
    pytorch = measured["models"][PYTORCH_BASELINE]
    assert pytorch["entity_f1_batch"] == pytest.approx(
        json.loads((params.path("metrics") / "evaluate.json").read_text())["f1"], abs=1e-6
    )
    for name, found in variants.items():
        assert found["entity_f1_drop_batch"] == pytest.approx(pytorch["entity_f1_batch"] - found["entity_f1_batch"])
        assert found["agreement_batch"]["span_agreement"] > 0.9, (name, found)
        assert found["entity_f1_batch"] > 0.8, (name, found)


def _with_gate(params: Any, rules: dict[str, Any]) -> Any:
    """The workspace's params with these gate rules merged in (written to its params.yaml)."""
    path = params.root / "params.yaml"
    path.write_text(json.dumps(deep_merge(json.loads(path.read_text()), {"gate": rules})))
    return load_params(params.root)


def test_the_gate_judges_a_tagger_by_type_and_rejects_one_that_never_finds_misc(tagger: Any, tmp_path: Path):
    params = tagger
    if not (params.path("metrics") / "quantize.json").exists():
        export.run(params)
        quantize.run(params)
    rules = {
        "metrics": {
            "f1": {"min": 0.6, "change": {"min": -0.02}},
            "f1.*": {"min": 0.5},
            "accuracy": {"min": 0.8},
        },
        "serving": {"min_agreement": 0.9, "max_entity_f1_drop": 0.05},
    }
    judged = _with_gate(params, rules)
    gate.run(judged)
    verdict = json.loads((judged.path("metrics") / "gate.json").read_text())
    assert verdict["passed"] and verdict["serving_variant"] in judged.quantize.variants
    by_name = {rule["name"]: rule for rule in verdict["rules"]}
    assert by_name["min_onnx_agreement (exported, entity spans)"]["value"] > 0.999
    assert {f"f1.{kind}" for kind in ("PER", "ORG", "LOC", "MISC")} <= set(by_name)
    assert by_name["f1"]["value"] == pytest.approx(verdict["overall"]["f1"]["candidate"])
    chosen = verdict["variants"][verdict["serving_variant"]]["rules"]
    assert {"entity F1 drop b1", "entity F1 drop batch"} <= {rule["name"] for rule in chosen}
    scopes = json.loads((judged.path("reports") / "gate_scores.json").read_text())
    assert {"overall", "length:1-10", "entities:some", "entities:none"} <= set(scopes)

    # The same tagger with its MISC tags silenced: overall F1 still passes, MISC's floor does not.
    blind = tmp_path / "blind"
    shutil.copytree(params.root, blind, ignore=shutil.ignore_patterns(".cache"))
    blind_params = load_params(blind)
    model = AutoModelForTokenClassification.from_pretrained(blind_params.path("model"))
    for tag in ("B-MISC", "I-MISC"):
        model.classifier.bias.data[model.config.label2id[tag]] = -1e4
    model.save_pretrained(blind_params.path("model"))
    for stage in (evaluate, export, quantize):
        stage.run(blind_params)
    with pytest.raises(gate.GateRejected, match=r"f1\.MISC is 0\.0000, below 0\.5000"):
        gate.run(_with_gate(blind_params, rules))
    rejected = json.loads((blind_params.path("metrics") / "gate.json").read_text())
    failed = {rule["name"] for rule in rejected["rules"] if rule["status"] == "FAIL"}
    assert failed == {"f1.MISC"}, rejected["rules"]
    assert rejected["overall"]["f1"]["candidate"] >= 0.6


WORDLIKE = st.lists(
    st.sampled_from([*"ab Z1.,'\"`-()?!\u2019\u201c\t\n", "U.S.", "don't", "''", "``", "\u00e9"]), max_size=30
)


@settings(max_examples=300, deadline=None)
@given(WORDLIKE.map("".join))
def test_raw_text_splits_into_words_whose_spans_cover_every_visible_character(text: str):
    for splitter in (word_spans, simple_word_spans):
        found, covered, last = splitter(text), set(), 0
        for start, end in found:
            assert last <= start < end <= len(text)
            assert not any(character.isspace() for character in text[start:end])
            covered |= set(range(start, end))
            last = end
        assert all(character.isspace() or i in covered for i, character in enumerate(text)), (text, found)
    sentence = "Peter Blackburn of the U.S. didn't say."
    assert [sentence[a:b] for a, b in word_spans(sentence)] == [
        *("Peter", "Blackburn", "of", "the", "U.S.", "did", "n't", "say", "."),
    ]


def test_feedback_entities_become_the_tags_of_the_served_words_or_are_refused_by_name():
    text = "Peter Blackburn met  the U.S. envoy in\tNew York."
    words, tags = tagged_words(
        text,
        [
            {"start": 39, "end": 47, "type": "LOC"},
            {"start": 0, "end": 15, "type": "PER"},
            {"start": 25, "end": 29, "type": "LOC"},
        ],
    )
    assert words == ["Peter", "Blackburn", "met", "the", "U.S.", "envoy", "in", "New", "York", "."]
    assert tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O", "B-LOC", "I-LOC", "O"]
    assert tagged_words(text, []) == (words, ["O"] * len(words))
    with pytest.raises(ValueError, match=r"entity PER 0-3 \('Pet'\) does not begin and end at word boundaries"):
        tagged_words(text, [{"start": 0, "end": 3, "type": "PER"}])
