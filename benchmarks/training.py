"""Training throughput: the train stage's settings against the textbook loop, in one run.

Same model (train.base_model), same SST-2 training rows, same initial weights,
batch size, learning rate, number of optimizer steps and hardware:

- textbook: the loop in most tutorials: every batch padded to 128 tokens,
  random order, fp32, `loss.backward(); optimizer.step()`;
- trainer defaults: the Hugging Face Trainer with its default settings
  (dynamic padding by its default collator, random order);
- stage: what the train stage runs (tasks/lib/training) (length-grouped batches, dynamic padding,
  bf16/fp16 and TF32 on GPUs), built from the stage's own TrainingArguments;
- stage fp32 (GPU only): the stage without mixed precision.

Run after `make install`, offline:

    python benchmarks/training.py [--steps 40] [--batch-size 32] [--threads 2]

Prints samples/s, seconds, padded tokens per row, mean training loss and the
speed-up of each configuration against the textbook loop.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from tasks.lib.columns import LABEL
from tasks.lib.config import load_params
from tasks.lib.data.readers import read_file
from tasks.lib.training.models import resolve_base_model
from tasks.lib.training.trainer import (
    Precision,
    choose_precision,
    encode,
    load_model,
    training_arguments,
)
from tasks.lib.validation.features import map_labels

SST2_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.tsv"
PAD_TO = 128


class CountingCollator:
    """Dynamic padding that records how many token positions each batch had."""

    def __init__(self, tokenizer: Any):
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer)
        self.positions = 0
        self.rows = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.pad(features)
        self.positions += batch["input_ids"].numel()
        self.rows += batch["input_ids"].shape[0]
        return batch


def textbook_loop(
    model: Any,
    rows: list[dict[str, Any]],
    tokenizer: Any,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
) -> tuple[float, float]:
    """Pad to 128, shuffle, fp32, AdamW with linear warmup/decay. Returns (mean loss, tokens per row)."""
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    padded = tokenizer.pad(
        [{k: r[k] for k in ("input_ids", "attention_mask")} for r in rows],
        padding="max_length",
        max_length=PAD_TO,
        return_tensors="pt",
    )
    labels = torch.tensor([r["labels"] for r in rows])
    data: Any = [
        {"input_ids": padded["input_ids"][i], "attention_mask": padded["attention_mask"][i], "labels": labels[i]}
        for i in range(len(rows))
    ]
    loader: DataLoader[Any] = DataLoader(
        data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * len(loader)), len(loader))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    losses = []
    for batch in tqdm(loader, desc="textbook"):
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return float(np.mean(losses)), float(PAD_TO)


def trainer_run(model: Any, rows: list[dict[str, Any]], tokenizer: Any, args: Any, stage: bool) -> tuple[float, float]:
    """One Trainer run; `stage` uses the stage's Trainer class (seeded length-grouped order)."""
    from transformers import Trainer

    from tasks.lib.training.sampler import ResumableTrainer

    collator = CountingCollator(tokenizer)
    trainer_class = ResumableTrainer if stage else Trainer
    result = trainer_class(
        model=model, args=args, train_dataset=rows, data_collator=collator, processing_class=tokenizer
    ).train()
    return float(result.training_loss), collator.positions / max(collator.rows, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--data", type=Path, default=SST2_TRAIN, help="labelled rows (default: SST-2 train)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per configuration")
    parser.add_argument("--batch-size", type=int, help="default: train.batch_size")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.root)
    config = params.train.model_copy(
        update={"batch_size": args.batch_size or params.train.batch_size, "gradient_accumulation_steps": 1}
    )
    labels = list(params.data.labels)
    frame = read_file(args.data, params.data.model_copy(update={"label_map": {"0": "negative", "1": "positive"}}))
    frame[LABEL] = list(map_labels(frame[LABEL], {"0": "negative", "1": "positive"}))
    frame = frame.sample(n=args.steps * config.batch_size, random_state=0)
    base_model = resolve_base_model(config.base_model, params.root)
    from transformers import AutoTokenizer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    rows = encode(tokenizer, frame, {label: i for i, label in enumerate(labels)}, config.max_length)
    lengths = np.array([len(r["input_ids"]) for r in rows])
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} threads"
    print(
        f"{len(rows)} rows of {args.data.name} ({args.steps} steps of {config.batch_size}), tokens per row: "
        f"mean {lengths.mean():.1f}, p95 {np.percentile(lengths, 95):.0f}, max {lengths.max()}; "
        f"{Path(base_model).name}; {device}"
    )

    def stage_args(work: Path, precision: Precision) -> Any:
        return training_arguments(
            config,
            work,
            config.batch_size,
            1,
            precision,
            max_steps=args.steps,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            logging_strategy="no",
        )

    def defaults_args(work: Path) -> Any:
        return TrainingArguments(
            output_dir=str(work),
            per_device_train_batch_size=config.batch_size,
            max_steps=args.steps,
            learning_rate=config.learning_rate,
            seed=config.seed,
            use_cpu=not cuda,
            report_to="none",
            save_strategy="no",
        )

    runs: dict[str, Callable[[Any, Path], tuple[float, float]]] = {
        "textbook (pad 128, fp32)": lambda model, work: textbook_loop(
            model, rows, tokenizer, config.batch_size, config.learning_rate, config.weight_decay, config.seed
        ),
        "trainer defaults": lambda model, work: trainer_run(model, rows, tokenizer, defaults_args(work), False),
        f"stage ({choose_precision(config).name})": lambda model, work: trainer_run(
            model, rows, tokenizer, stage_args(work, choose_precision(config)), True
        ),
    }
    if cuda:
        fp32 = choose_precision(config.model_copy(update={"precision": "fp32"}))
        runs["stage fp32"] = lambda model, work: trainer_run(model, rows, tokenizer, stage_args(work, fp32), True)
    results = []
    for name, fit in runs.items():
        model = load_model(base_model, labels, config)  # the same initial weights for every run
        with tempfile.TemporaryDirectory() as work:
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            loss, tokens = fit(model, Path(work))
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        results.append(
            {
                "configuration": name,
                "samples/s": len(rows) / seconds,
                "seconds": seconds,
                "tokens/row": tokens,
                "mean loss": loss,
            }
        )
        del model
    table = pd.DataFrame(results)
    table["speed-up"] = table["samples/s"] / table["samples/s"].iloc[0]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
