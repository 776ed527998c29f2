"""Structured pruning: the least important heads and feed-forward neurons go, the matrices shrink,
and what a unit that contributes nothing is pruned leaves the answers as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
)

from tasks.lib.export.onnx_export import export_model
from tasks.lib.export.pruning import UnsupportedModel, importance, prune
from tasks.lib.inference.onnx_classifier import onnxruntime_engine

TEXTS = ["a gripping, funny film", "dull and far too long", "not bad at all", "the plot goes nowhere"] * 4


@pytest.fixture
def model_and_tokenizer(tiny_model_dir):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=16,
        attn_implementation="eager",
    )
    return BertForSequenceClassification(config).eval(), tokenizer


def _logits(model, tokenizer) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


def test_units_that_contribute_nothing_score_zero_and_go_first_leaving_the_answers_unchanged(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    size = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():  # head 2 of layer 0 and neuron 5 of layer 1 feed nothing onward
        model.bert.encoder.layer[0].attention.output.dense.weight[:, 2 * size : 3 * size] = 0
        model.bert.encoder.layer[1].output.dense.weight[:, 5] = 0
    before = _logits(model, tokenizer)
    heads, neurons = importance(model, tokenizer, TEXTS, "sequence_classification", 8, 64)
    assert heads[0][2] == 0 and neurons[1][5] == 0
    assert all((h > 0).sum() == len(h) - (i == 0) for i, h in enumerate(heads))
    units = prune(model, heads, neurons, head_share=1 / 8, neuron_share=1 / 32)
    assert units.heads == [(4, 3), (4, 4)] and units.neurons == [(16, 16), (16, 15)]
    assert model.bert.encoder.layer[0].attention.self.query.out_features == 3 * size
    assert model.bert.encoder.layer[1].intermediate.dense.out_features == 15
    torch.testing.assert_close(_logits(model, tokenizer), before, atol=1e-5, rtol=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # handed back as it came


def test_every_layer_keeps_a_head_and_a_neuron_and_the_pruned_graph_matches_pytorch(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    heads, neurons = importance(model, tokenizer, TEXTS, "sequence_classification", 8, 64)
    units = prune(model, heads, neurons, head_share=0.99, neuron_share=0.99)
    assert units.heads == [(4, 1), (4, 1)] and units.neurons == [(16, 1), (16, 1)]
    assert units.summary() == "2 of 8 heads, 2 of 32 feed-forward neurons kept"
    export_model(model, tokenizer, tmp_path / "pruned.onnx", 17, "sequence_classification")
    assert not model.training  # the exporter leaves it as it found it: dropout off
    engine = onnxruntime_engine(tmp_path / "pruned.onnx", 1)
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    found = engine.forward({name: batch[name].astype(np.int64) for name in engine.inputs})
    np.testing.assert_allclose(found, _logits(model, tokenizer).numpy(), atol=1e-4)


def test_a_model_not_laid_out_as_bert_is_refused_by_name(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    config = MPNetConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    with pytest.raises(UnsupportedModel, match="MPNetForSequenceClassification is not laid out as BERT"):
        importance(MPNetForSequenceClassification(config), tokenizer, TEXTS, "sequence_classification", 8, 64)
