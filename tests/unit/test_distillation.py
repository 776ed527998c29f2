"""Knowledge distillation (`train.distill`): the teacher stage, the soft-label loss, a student with
fewer layers, and what DVC tracks for the teacher."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import BertForSequenceClassification

from tasks.lib.columns import ORIGIN, TEXT
from tasks.lib.config import load_params
from tasks.lib.errors import ConfigError, PipelineError
from tasks.lib.training.distillation import (
    INHERITED_SETTINGS,
    MissingSoftLabels,
    distillation_loss,
    logits_for,
    soft_label_table,
)
from tasks.lib.training.layers import keep_encoder_layers
from tasks.lib.training.logits import torch_logits
from tasks.lib.training.models import model_labels
from tasks.stages import augment, evaluate, ingest, split, teacher, train, validate
from tests.support.repo import REPO, deep_merge, repo_params, tiny_overrides


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, tiny_model_dir):
    """The DAG to evaluate with a trained tiny teacher and a one-layer student distilled from it."""
    root = tmp_path_factory.mktemp("distil")
    overrides = deep_merge(
        tiny_overrides(tiny_model_dir),
        {
            "augment": {"synonym": {"ratio": 0.2}, "backtranslation": {"ratio": 0.0}},
            "train": {"encoder_layers": 1, "distill": {"enabled": True, "temperature": 2.0, "alpha": 0.7}},
            "teacher": {"base_model": str(tiny_model_dir), "epochs": 2, "learning_rate": 1e-3, "batch_size": 16},
        },
    )
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))
    params = load_params(root)
    for stage in (ingest, validate, split, augment, teacher, train, evaluate):
        stage.run(params)
    return params


def test_the_teacher_trains_with_every_layer_and_labels_every_augmented_row(distilled):
    rows = pd.read_parquet(distilled.path("augmented"))
    assert (rows[ORIGIN] != "original").any()  # variants get soft labels too
    table = pd.read_parquet(distilled.path("teacher_logits"))
    assert list(table.columns) == [TEXT, "negative", "positive"]
    assert set(table[TEXT]) == set(rows[TEXT]) and table[TEXT].is_unique
    metrics = json.loads((distilled.path("metrics") / "teacher.json").read_text())
    assert metrics["enabled"] and metrics["encoder_layers"] == 2 and not metrics["distilled"]
    # The table holds the saved teacher's own logits.
    sample = table.sample(20, random_state=0)
    again = torch_logits(distilled.path("teacher"), sample[TEXT].tolist(), 8, distilled.train.max_length)
    np.testing.assert_allclose(sample[["negative", "positive"]].to_numpy(), again, atol=1e-4)


def test_the_student_keeps_one_layer_is_distilled_and_goes_on_through_the_dag(distilled):
    metrics = json.loads((distilled.path("metrics") / "train.json").read_text())
    assert metrics["distilled"] and metrics["encoder_layers"] == 1
    config = json.loads((distilled.path("model") / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert model_labels(distilled.path("model")) == ["negative", "positive"]
    report = json.loads((distilled.path("metrics") / "evaluate.json").read_text())
    assert report["n"] == len(pd.read_parquet(distilled.path("test_split")))


def test_without_distillation_the_teacher_stage_writes_empty_outputs_and_train_reads_none(make_params):
    params = make_params()
    assert not params.train.distill.enabled
    teacher.run(params)
    for folder in (params.path("teacher"), params.path("reports") / "teacher"):  # what DVC tracks
        assert (folder / "README.txt").read_text().startswith("No teacher")
    assert pd.read_parquet(params.path("teacher_logits")).empty
    assert json.loads((params.path("metrics") / "teacher.json").read_text()) == {"enabled": False}


def test_soft_labels_follow_the_students_label_order_and_name_what_is_missing():
    table = soft_label_table(["a", "b", "a"], np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]]), ["neg", "pos"])
    assert len(table) == 2
    np.testing.assert_array_equal(logits_for(pd.Series(["b", "a"]), table, ["pos", "neg"]), [[4.0, 3.0], [2.0, 1.0]])
    with pytest.raises(MissingSoftLabels, match=r"lack 1 of 2 training rows \(first: 'c'\)"):
        logits_for(pd.Series(["a", "c"]), table, ["neg", "pos"])
    with pytest.raises(MissingSoftLabels, match=r"labels \['neg', 'pos'\].*\['neg', 'neutral', 'pos'\]"):
        logits_for(pd.Series(["a"]), table, ["neg", "neutral", "pos"])


def test_the_loss_mixes_soft_and_hard_parts_and_skips_the_hard_part_of_variants():
    student = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    labels, teacher_logits = torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    cross_entropy = torch.nn.functional.cross_entropy(student, labels, reduction="none")
    hard_only = distillation_loss(student, teacher_logits, labels, torch.tensor([1.0, 0.0]), 2.0, 0.0)
    assert hard_only.item() == pytest.approx(cross_entropy[0].item() / 2)  # the variant's row adds nothing
    assert distillation_loss(teacher_logits, teacher_logits, labels, torch.ones(2), 3.0, 1.0).item() == pytest.approx(
        0.0
    )
    # The soft part: T^2 x KL(teacher || student) at temperature T.
    temperature = 2.0
    p = torch.softmax(teacher_logits / temperature, -1)
    kl = (p * (p.log() - torch.log_softmax(student / temperature, -1))).sum(-1).mean() * temperature**2
    assert distillation_loss(student, teacher_logits, labels, torch.ones(2), temperature, 1.0).item() == pytest.approx(
        kl.item(), rel=1e-5
    )


def test_a_student_takes_evenly_spaced_layers_first_and_last_kept():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=6, num_attention_heads=2, intermediate_size=16)
    )
    layers = list(model.bert.encoder.layer)
    keep_encoder_layers(model, 3)
    assert list(model.bert.encoder.layer) == [layers[0], layers[2], layers[5]]
    assert model.config.num_hidden_layers == 3
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 2)
    with pytest.raises(PipelineError, match="4 asked, the base model has 3"):
        keep_encoder_layers(model, 4)


def test_dvc_tracks_the_teachers_settings_and_the_train_settings_it_inherits_only():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["teacher"]
    inherited = {f"train.{name}" for name in INHERITED_SETTINGS}
    assert set(stage["params"]) == {"task", "data.labels", "teacher", "train.distill.enabled", *inherited}
    # What the student alone sets does not retrain the teacher.
    assert not {"train.learning_rate", "train.base_model", "train.epochs", "train.encoder_layers"} & set(
        stage["params"]
    )


def test_a_tagger_is_not_distilled(make_params):
    with pytest.raises(ConfigError, match="distillation trains sequence classifiers only"):
        make_params(
            {
                "task": "token_classification",
                "data": {"labels": ["PER", "LOC"]},
                "train": {"distill": {"enabled": True}},
            }
        )


def test_the_stage_trainer_batches_the_teachers_logits_and_scores_them(tiny_model_dir, tmp_path, make_params):
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from tasks.lib.training.stage_trainer import StageTrainer
    from tasks.lib.training.trainer import Precision, training_arguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = BertForSequenceClassification.from_pretrained(tiny_model_dir)
    rows = [
        {**tokenizer(text), "labels": label, "teacher_logits": logits, "hard": hard}
        for text, label, logits, hard in [("good", 1, [-1.0, 2.0], 1.0), ("a bad film", 0, [0.5, 0.1], 0.0)]
    ]
    trainer = StageTrainer(
        model=model,
        args=training_arguments(make_params().train, tmp_path, 2, 1, Precision("fp32")),  # the stage's
        train_dataset=rows,
        eval_dataset=rows,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.distill = make_params().train.distill.model_copy(update={"temperature": 2.0, "alpha": 0.7})
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["teacher_logits"].shape == (2, 2) and batch["hard"].tolist() in ([1.0, 0.0], [0.0, 1.0])
    teacher_logits, hard = batch["teacher_logits"], batch["hard"]
    loss = trainer.compute_loss(model.eval(), dict(batch))
    student = model(**{k: v for k, v in batch.items() if k not in ("teacher_logits", "hard")}).logits
    assert float(loss) == pytest.approx(
        float(distillation_loss(student, teacher_logits, batch["labels"], hard, 2.0, 0.7))
    )
