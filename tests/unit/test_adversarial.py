"""Adversarial training (`train.adversarial: fgm`): a step's gradient is the clean batch's plus the
batch's with its word embeddings moved epsilon along the loss gradient."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from tasks.lib.config import AdversarialConfig
from tasks.lib.training.adversarial import adversarial_step
from tasks.lib.training.stage_trainer import StageTrainer
from tasks.stages import augment, ingest, split, train, validate
from tests.support.repo import deep_merge, tiny_overrides

BATCH = {
    "input_ids": torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    "labels": torch.tensor([0, 1]),
}


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    # No dropout: the two passes of a step and the hand-made ones below see the same network.
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _fgm_step(model: torch.nn.Module, epsilon: float, tmp_path) -> float:
    trainer = StageTrainer(
        model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    )
    trainer.adversarial = AdversarialConfig(method="fgm", epsilon=epsilon)
    trainer.current_gradient_accumulation_steps = 1  # what the training loop sets
    return float(trainer.training_step(model, dict(BATCH)))


def _by_hand(model: torch.nn.Module, epsilon: float) -> tuple[float, dict[str, torch.Tensor]]:
    """The clean loss, and the clean gradient plus the gradient at embeddings + epsilon * g / |g|."""
    embeddings, seen = model.get_input_embeddings(), []

    def keep(module, args, output):
        output = output if output.requires_grad else output.detach().requires_grad_()
        output.retain_grad()
        seen.append(output)
        return output

    handle = embeddings.register_forward_hook(keep)
    clean = model(**BATCH).loss
    clean.backward()
    handle.remove()
    step = epsilon * seen[0].grad / seen[0].grad.norm()
    handle = embeddings.register_forward_hook(lambda module, args, output: output + step)
    model(**BATCH).loss.backward()
    handle.remove()
    return float(clean.detach()), _gradients(model)


@pytest.mark.parametrize("frozen_embeddings", [False, True], ids=["full", "embeddings-frozen"])
def test_an_fgm_step_adds_the_gradient_of_the_perturbed_batch(tmp_path, frozen_embeddings):
    model = _model()
    model.get_input_embeddings().weight.requires_grad_(not frozen_embeddings)  # as LoRA or BitFit leave it
    loss = _fgm_step(model, 0.5, tmp_path)
    got = _gradients(model)
    model.zero_grad()
    clean_loss, expected = _by_hand(model, 0.5)
    assert loss == pytest.approx(clean_loss)  # what the curves show: the clean batch's loss
    assert got.keys() == expected.keys() and ("bert.embeddings.word_embeddings.weight" in got) != frozen_embeddings
    for name, gradient in expected.items():
        torch.testing.assert_close(got[name], gradient, msg=name)
    model.zero_grad()
    model(**BATCH).loss.backward()
    assert not torch.allclose(_gradients(model)["classifier.weight"], got["classifier.weight"])  # not the clean one


def test_the_step_is_epsilon_long_along_the_gradient_and_none_without_one():
    gradient = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    step = adversarial_step(gradient, 2.0)
    assert step is not None and float(step.norm()) == pytest.approx(2.0)
    torch.testing.assert_close(step, gradient * 0.4)
    assert adversarial_step(torch.zeros(2, 2), 2.0) is None
    assert adversarial_step(torch.tensor([float("nan"), 1.0]), 2.0) is None


def test_the_train_stage_trains_with_fgm_steps(make_params, tiny_model_dir):
    params = make_params(
        deep_merge(
            tiny_overrides(tiny_model_dir),
            {
                "augment": {"synonym": {"ratio": 0.0}, "backtranslation": {"ratio": 0.0}},
                "train": {"epochs": 1, "adversarial": {"method": "fgm", "epsilon": 1.0}},
            },
        )
    )
    for stage in (ingest, validate, split, augment, train):
        stage.run(params)
    metrics = json.loads((params.path("metrics") / "train.json").read_text())
    assert metrics["adversarial"] == "fgm" and metrics["steps"] > 0
