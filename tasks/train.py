"""Stage `train`: fine-tune a pretrained encoder with a classification head.

Hugging Face Trainer with AdamW, linear warmup/decay, weight decay, dropout
from params, dynamic padding with length-grouped batches, early stopping on
validation accuracy and the best checkpoint restored at the end. Uses CUDA
(bf16 where supported, else fp16) when present, the CPU otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import Params, PipelineError, TrainConfig
from tasks.io import LABEL, TEXT, atomic_dir, file_md5, read_table, write_json

DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                "classifier_dropout", "seq_classif_dropout")


class ModelNotFound(PipelineError, FileNotFoundError):
    """train.base_model names no usable model."""


def resolve_base_model(spec: str, root: Path) -> str:
    """Turn `train.base_model` into something `from_pretrained` loads.

    `pkg:<module>/<folder>` is a folder inside an installed package (offline);
    an existing path (absolute or relative to `root`) is used as is; anything
    else is passed on as a Hugging Face model id (needs network).
    """
    if spec.startswith("pkg:"):
        module, _, folder = spec[4:].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or found.origin is None:
            raise ModelNotFound(f"train.base_model: package module '{module}' is not installed "
                                f"(pip install {module.replace('_', '-')})")
        path = Path(found.origin).parent / folder
        if not (path / "config.json").exists():
            raise ModelNotFound(f"train.base_model: {path} has no config.json")
        return str(path)
    local = Path(spec) if Path(spec).is_absolute() else root / spec
    return str(local) if local.exists() else spec


def _set_dropout(config: Any, dropout: float) -> None:
    for key in DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, dropout)


def checkpoint_dir(cache: Path, *fingerprint: str) -> Path:
    """Checkpoints of one (data, params) combination; other inputs never resume them."""
    digest = hashlib.sha256("\0".join(fingerprint).encode()).hexdigest()[:16]
    return cache / "checkpoints" / digest


def _encode(tokenizer: Any, frame: pd.DataFrame, label2id: dict[str, int], max_length: int) -> list[dict[str, Any]]:
    encoded = tokenizer(list(frame[TEXT]), truncation=True, max_length=max_length)
    labels = [label2id[label] for label in frame[LABEL]]
    return [{"input_ids": ids, "attention_mask": mask, "labels": label}
            for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], labels)]


def train(train_rows: pd.DataFrame, val_rows: pd.DataFrame, labels: list[str], config: TrainConfig,
          base_model: str, output_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Fine-tune `base_model` and save the best model (safetensors + tokenizer) to `output_dir`.

    Returns:
        Training metrics (best validation accuracy, epochs, throughput, device).
    """
    import torch
    from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments,
                              set_seed)

    set_seed(config.seed)
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model_config = AutoConfig.from_pretrained(base_model, num_labels=len(labels), label2id=label2id,
                                              id2label={i: label for label, i in label2id.items()})
    _set_dropout(model_config, config.dropout)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model, config=model_config, use_safetensors=True, trust_remote_code=False)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    bf16 = cuda and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size * 2,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear",
        train_sampling_strategy="group_by_length",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=10,
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=not cuda,
        report_to="none",
        dataloader_num_workers=0,
    )

    def accuracy(prediction: Any) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model=model, args=args,
        train_dataset=_encode(tokenizer, train_rows, label2id, config.max_length),
        eval_dataset=_encode(tokenizer, val_rows, label2id, config.max_length),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)],
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    best = trainer.evaluate()
    with atomic_dir(output_dir) as staging:
        # save_pretrained, not trainer.save_model: the latter adds training_args.bin, a pickle.
        trainer.model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
    history = [entry for entry in trainer.state.log_history if "loss" in entry or "eval_accuracy" in entry]
    return {
        "best_val_accuracy": round(float(best["eval_accuracy"]), 6),
        "epochs_run": round(float(trainer.state.epoch or 0), 3),
        "steps": int(trainer.state.global_step),
        "train_rows": len(train_rows),
        "train_seconds": round(seconds, 2),
        "samples_per_s": round(float(result.metrics.get("train_samples_per_second", 0.0)), 2),
        "device": "cuda" if cuda else "cpu",
        "precision": "bf16" if bf16 else ("fp16" if cuda else "fp32"),
        "history": history,
    }


def run(params: Params) -> None:
    """Stage entry point: train on the augmented split, select on val, save the model."""
    config = params.train
    train_path, val_path = params.path("augmented"), params.path("val_split")
    base_model = resolve_base_model(config.base_model, params.root)
    work_dir = checkpoint_dir(params.path("cache"), file_md5(train_path), file_md5(val_path),
                              config.model_dump_json(), base_model)
    metrics = train(read_table(train_path), read_table(val_path), list(params.data.labels), config,
                    base_model, params.path("model"), work_dir)
    # The model is saved; its checkpoints are only needed by an unfinished run.
    shutil.rmtree(work_dir, ignore_errors=True)
    history = metrics.pop("history")
    write_json(params.path("metrics") / "train.json", metrics)
    curves = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h.get("loss"),
               "val_accuracy": h.get("eval_accuracy")} for h in history]
    write_json(params.path("reports") / "train_curves.json", curves)
    print(f"train: {json.dumps(metrics)}")
