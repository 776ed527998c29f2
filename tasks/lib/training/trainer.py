"""Fine-tuning a pretrained encoder with a classification head: the Hugging Face Trainer, set up from `train`.

A sequence classifier (one label per text) or, for `task: token_classification`, a token
classifier (one tag per word): words go to the tokenizer as they are (`is_split_into_words`),
each word's tag labels its first subword and the other subwords are not scored (-100), and the
best checkpoint is the one with the highest entity F1 on the validation split.

AdamW with weight decay, warmup then linear or cosine decay, dropout from
params, dynamic padding with length-grouped batches, gradient accumulation,
validation and a checkpoint every epoch or every `eval_steps`, early stopping
with patience and the best checkpoint restored at the end. On CUDA: bf16
where supported, else fp16 with loss scaling, TF32 matmuls on Ampere and
later, and a batch-size back-off on out-of-memory. Optional parameter-efficient
tuning (merged before saving), fewer encoder layers, knowledge distillation from a
teacher's logits, adversarial (FGM) steps, and torchrun data parallelism.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.lib.columns import LABEL, ORIGIN, TEXT
from tasks.lib.config import Task, TrainConfig
from tasks.lib.data.sentences import tag_list
from tasks.lib.errors import PipelineError
from tasks.lib.io import atomic_dir
from tasks.lib.training import checkpoints, distributed
from tasks.lib.training.parameter_efficient import add_peft, parameter_counts, save_trained

log = logging.getLogger(__name__)

DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
    "classifier_dropout",
    "seq_classif_dropout",
)


class OutOfMemory(PipelineError, RuntimeError):
    """The GPU ran out of memory even at the smallest batch, or back-off is off."""


@dataclass(frozen=True)
class Precision:
    """Mixed-precision settings for the Trainer and the name reported."""

    name: str
    bf16: bool = False
    fp16: bool = False
    tf32: bool | None = None


def choose_precision(config: TrainConfig) -> Precision:
    """bf16 where the GPU supports it, else fp16 (the Trainer scales the loss); fp32 on CPU."""
    import torch

    if not torch.cuda.is_available():
        return Precision("fp32")
    tf32 = torch.cuda.get_device_capability()[0] >= 8 or None  # Ampere and later
    if config.precision == "fp32":
        return Precision("fp32", tf32=tf32)
    if torch.cuda.is_bf16_supported():
        return Precision("bf16", bf16=True, tf32=tf32)
    return Precision("fp16", fp16=True, tf32=tf32)


def _set_dropout(config: Any, dropout: float) -> None:
    for key in DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, dropout)


def encode_words(tokenizer: Any, frame: pd.DataFrame, tag2id: dict[str, int], max_length: int) -> list[dict[str, Any]]:
    """Token ids per sentence, unpadded, with each word's tag on its first subword (-100 elsewhere:
    other subwords and special tokens are not scored). Words past `max_length` subwords are cut."""
    sentences = [text.split(" ") for text in frame[TEXT]]
    encoded = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)
    rows = []
    for row, (ids, mask, label) in enumerate(
        zip(encoded["input_ids"], encoded["attention_mask"], frame[LABEL], strict=True)
    ):
        tags = label.split(" ")
        targets, previous = [], None
        for word in encoded.word_ids(row):
            targets.append(-100 if word is None or word == previous else tag2id[tags[word]])
            previous = word
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": targets})
    return rows


def encode(tokenizer: Any, frame: pd.DataFrame, label2id: dict[str, int], max_length: int) -> list[dict[str, Any]]:
    """Token ids per row, unpadded (the collator pads each batch to its longest row)."""
    encoded = tokenizer(list(frame[TEXT]), truncation=True, max_length=max_length)
    labels = [label2id[label] for label in frame[LABEL]]
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": label}
        for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], labels, strict=True)
    ]


def load_model(base_model: str, labels: list[str], config: TrainConfig, task: Task = "sequence_classification") -> Any:
    """The pretrained encoder with a fresh classification head (seeded; per token for token
    classification, `labels` then being its tags), set up for `train.peft`."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification, set_seed

    set_seed(config.seed)  # the head's initial weights
    label2id = {label: i for i, label in enumerate(labels)}
    model_config = AutoConfig.from_pretrained(
        base_model, num_labels=len(labels), label2id=label2id, id2label={i: label for label, i in label2id.items()}
    )
    _set_dropout(model_config, config.dropout)
    # A base checkpoint that has a head for another number of labels (a fine-tuned model,
    # or a label set that changed) gets a fresh one instead of an error.
    head = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForTokenClassification
    model = head.from_pretrained(
        base_model, config=model_config, use_safetensors=True, trust_remote_code=False, ignore_mismatched_sizes=True
    )
    if config.encoder_layers is not None:
        from tasks.lib.training.layers import keep_encoder_layers

        keep_encoder_layers(model, config.encoder_layers)
    return add_peft(model, config)


def training_arguments(
    config: TrainConfig,
    output_dir: Path,
    batch_size: int,
    accumulation: int,
    precision: Precision,
    best: str = "accuracy",
    **overrides: Any,
) -> Any:
    """The Trainer settings of the stage (benchmarks build theirs from here too); `best`: the
    validation metric that picks the checkpoint kept."""
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    schedule = (
        {
            "eval_strategy": "steps",
            "eval_steps": config.eval_steps,
            "save_strategy": "steps",
            "save_steps": config.eval_steps,
        }
        if config.eval_steps
        else {"eval_strategy": "epoch", "save_strategy": "epoch"}
    )
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size * 2,
        gradient_accumulation_steps=accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the total steps
        weight_decay=config.weight_decay,
        train_sampling_strategy="group_by_length",  # ResumableTrainer's seeded variant
        **schedule,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=best,
        greater_is_better=True,
        restore_callback_states_from_checkpoint=True,  # early stopping's patience count survives a resume
        logging_strategy="steps",
        logging_steps=10,
        seed=config.seed,
        data_seed=config.seed,
        full_determinism=config.deterministic,
        bf16=precision.bf16,
        fp16=precision.fp16,
        tf32=precision.tf32,
        use_cpu=not cuda,
        ddp_backend=("nccl" if cuda else "gloo") if distributed.is_worker() else None,
        # True scales a classifier's (already per-batch mean) loss by the world
        # size: the logged losses double and gradient clipping bites twice as early.
        average_tokens_across_devices=False,
        ddp_find_unused_parameters=False,
        report_to="none",
        # The Trainer would drop row keys its model's forward does not take, the teacher's logits
        # among them (distillation.DistillationLoss takes them out itself).
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def _accuracy(prediction: Any) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def _entity_scores(tags: list[str]) -> Any:
    """compute_metrics of a token classifier: entity F1 (micro) and word accuracy on the scored words."""
    from tasks.lib.evaluation.entity_metrics import entity_counts, scores

    types = sorted({tag[2:] for tag in tags if tag != "O"})

    def compute(prediction: Any) -> dict[str, float]:
        guessed, gold = np.argmax(prediction.predictions, axis=-1), prediction.label_ids
        scored = [row >= 0 for row in gold]
        truth = [[tags[i] for i in row[keep]] for row, keep in zip(gold, scored, strict=True)]
        said = [[tags[i] for i in row[keep]] for row, keep in zip(guessed, scored, strict=True)]
        result = scores(entity_counts(truth, said, types))
        return {"f1": result["micro"]["f1"], "accuracy": result["accuracy"]["value"]}

    return compute


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _free_gpu() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    labels: list[str],
    config: TrainConfig,
    base_model: str,
    output_dir: Path,
    run_dir: Path,
    curves_dir: Path | None = None,
    callbacks: list[Any] | None = None,
    task: Task = "sequence_classification",
    soft_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fine-tune `base_model` and save the best model (safetensors + tokenizer) to `output_dir`.

    Token classification: `labels` are the entity types (data.labels); the model's labels are
    their IOB2 tags (tasks.lib.data.sentences.tag_list).

    `soft_labels`: a teacher's logits per training row (in `labels` order) to distil from
    (`train.distill`); rows that augmentation made get no hard-label loss.

    Resumes from the newest complete checkpoint in `run_dir` (see
    tasks/lib/training/checkpoints.py); on GPU out-of-memory halves the batch and
    doubles accumulation (`oom_backoff`). Under torchrun only rank 0 saves.

    Returns:
        Training metrics (best validation accuracy, steps, throughput, device, precision, ...).
    Raises:
        OutOfMemory: out of memory at batch 1, or with `oom_backoff` off.
    """
    from transformers import (
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
    )

    from tasks.lib.training.curves import LiveCurves
    from tasks.lib.training.stage_trainer import StageTrainer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    words = task == "token_classification"
    classes = tag_list(labels) if words else labels
    label2id = {label: i for i, label in enumerate(classes)}
    encoder = encode_words if words else encode
    train_set = encoder(tokenizer, train_rows, label2id, config.max_length)
    val_set = encoder(tokenizer, val_rows, label2id, config.max_length)
    if soft_labels is not None:
        labelled = train_rows[ORIGIN] == "original" if ORIGIN in train_rows else pd.Series(True, train_rows.index)
        for row, logits, hard in zip(train_set, soft_labels, labelled, strict=True):
            row.update(teacher_logits=logits.tolist(), hard=float(hard))
    best_metric = "f1" if words else "accuracy"
    precision = choose_precision(config)
    resume = checkpoints.latest(run_dir)
    batch, accumulation = (
        (resume.batch_size, resume.accumulation) if resume else (config.batch_size, config.gradient_accumulation_steps)
    )
    backoffs = 0
    while True:
        model = load_model(base_model, classes, config, task)
        trainer = StageTrainer(
            model=model,
            args=training_arguments(
                config,
                checkpoints.layout_folder(run_dir, batch, accumulation),
                batch,
                accumulation,
                precision,
                best=best_metric,
            ),
            train_dataset=train_set,
            eval_dataset=val_set,
            data_collator=DataCollatorForTokenClassification(tokenizer)
            if words
            else DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_metrics=_entity_scores(classes) if words else _accuracy,
            callbacks=[
                EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience),
                *([LiveCurves(curves_dir)] if curves_dir else []),
                *(callbacks or []),
            ],
        )
        trainer.distill = config.distill if soft_labels is not None else None
        trainer.adversarial = config.adversarial
        if resume:
            log.info(f"train: resuming from {resume.path} (step {resume.step})")
        started = time.perf_counter()
        try:
            result = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
            break
        except Exception as error:
            if not _is_out_of_memory(error):
                raise
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        # Outside the except block: the traceback, which holds the activations, is gone.
        del trainer, model
        _free_gpu()
        if not config.oom_backoff or batch == 1:
            raise OutOfMemory(
                f"train: the GPU ran out of memory at train.batch_size {batch} (gradient accumulation "
                f"{accumulation}, train.max_length {config.max_length}). Lower train.max_length or "
                "train.batch_size (raise train.gradient_accumulation_steps to keep the rows per step), "
                "or set train.peft (lora, ia3 or bitfit)"
                + ("" if config.oom_backoff else ", or set train.oom_backoff")
                + f". ({detail})"
            )
        batch, accumulation, resume = batch // 2, accumulation * 2, None
        backoffs += 1
        log.info(
            f"train: out of GPU memory; starting again with batch {batch} x accumulation {accumulation} "
            "(the same rows per optimizer step)",
        )
    seconds = time.perf_counter() - started
    best = trainer.evaluate()
    trainable, total = parameter_counts(trainer.model)
    metrics = {
        "best_val_accuracy": round(float(best["eval_accuracy"]), 6),  # of words, for token classification
        **({"best_val_f1": round(float(best["eval_f1"]), 6)} if words else {}),
        "epochs_run": round(float(trainer.state.epoch or 0), 3),
        "steps": int(trainer.state.global_step),
        "resumed_from_step": resume.step if resume else None,
        "train_rows": len(train_rows),
        "train_seconds": round(seconds, 2),
        "samples_per_s": round(float(result.metrics.get("train_samples_per_second", 0.0)), 2),
        "device": trainer.args.device.type,
        "precision": precision.name,
        "processes": trainer.args.world_size,
        "batch_size": batch,
        "gradient_accumulation_steps": accumulation,
        "rows_per_step": batch * accumulation * trainer.args.world_size,
        "oom_backoffs": backoffs,
        "peft": config.peft,
        "encoder_layers": int(model.config.num_hidden_layers),
        "distilled": soft_labels is not None,
        "adversarial": config.adversarial.method,
        "trainable_parameters": trainable,
        "trainable_share": round(trainable / total, 6),
    }
    if trainer.is_world_process_zero():
        with atomic_dir(output_dir) as staging:
            # save_pretrained, not trainer.save_model: the latter adds training_args.bin, a pickle.
            save_trained(trainer.model, config, staging)
            tokenizer.save_pretrained(str(staging))
    return metrics
