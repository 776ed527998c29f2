"""Smaller models in one run: distillation, fewer layers and pruning against direct fine-tuning.

On the same seeded sample of SST-2 training rows (validation: another seeded sample of the
training file; scores: SST-2's dev split, which no run selects on), with the train stage's code
(tasks/lib/training) and params.yaml's settings:

1. the teacher (`teacher`: all-mpnet-base-v2 by default, `make mpnet`) is fine-tuned and labels
   the training rows;
2. for each student size in --layers (encoder layers kept from train.base_model, MiniLM's 6 by
   default), a student fine-tuned directly and one distilled from the teacher's logits
   (train.distill's temperature and alpha);
3. every model is exported to ONNX, quantized to dynamic int8 (quantize.variants.int8_dynamic)
   and measured by the quantize stage's code: PyTorch and int8 dev accuracy, int8 latency at
   batch 1 (p50) and its speed-up over the full-size int8 student;
4. the full-size direct student is also structurally pruned at each share in --prune (that share
   of its attention heads and of its feed-forward neurons, importance on the validation rows;
   the quantize stage's `pruned` variant with int8) and measured alike.

Run after `make install` and `make mpnet`, offline:

    python benchmarks/compression.py [--rows 5000] [--layers 6,3,2] [--prune 0.25,0.5] [--epochs 3]

Prints one table, teacher first.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sst2_rows import LABELS, sst2, train_and_val
from tqdm import tqdm

from tasks.lib.artifacts import MODEL_FILE, OPTIMIZED_FILE, TOKENIZER_FILE
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import PYTORCH_BASELINE, Params, PrunedVariant, TrainConfig, load_params
from tasks.lib.export.onnx_export import export_onnx, optimize_graph
from tasks.lib.export.variant_measurement import measure_variants
from tasks.lib.export.variants import build_variant
from tasks.lib.inference.onnx_classifier import ClassifierInfo
from tasks.lib.training.distillation import teacher_config
from tasks.lib.training.logits import torch_logits
from tasks.lib.training.models import model_labels, resolve_base_model
from tasks.lib.training.trainer import train

INT8 = "int8_dynamic"


def serving(
    params: Params, model_dir: Path, dev: pd.DataFrame, latency_rows: int, prune: list[float], calibration: list[str]
) -> dict[str, dict[str, Any]]:
    """The quantize stage's measurement of dynamic int8 and each pruned int8 variant on the dev rows:
    per variant, PyTorch's and its own dev accuracy, batch-1 latency p50 and size."""
    variants: dict[str, Any] = {INT8: params.quantize.variants[INT8]}
    for share in prune:
        variants[f"pruned {share:.0%}"] = PrunedVariant(
            kind="pruned", graph="exported", heads=share, neurons=share, calibration_rows=len(calibration), int8=True
        )
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        export_onnx(model_dir, folder / MODEL_FILE, params.export.opset, "sequence_classification")
        optimize_graph(folder / MODEL_FILE, folder / OPTIMIZED_FILE, model_dir)
        shutil.copy(model_dir / TOKENIZER_FILE, folder / TOKENIZER_FILE)
        ClassifierInfo(model_labels(model_dir), params.train.max_length, "sequence_classification").save(folder)
        built = {
            name: build_variant(
                name.replace(" ", "_").replace("%", ""), variant, folder, folder, calibration, model_dir
            ).name
            for name, variant in variants.items()
        }
        config = params.quantize.benchmark.model_copy(update={"latency_rows": latency_rows})
        report = measure_variants(
            model_dir, folder, built, folder / MODEL_FILE, list(dev[TEXT]), [[x] for x in dev[LABEL]], config
        )
    models = report.model_dump()["models"]
    return {
        name: {
            "torch_accuracy": models[PYTORCH_BASELINE]["accuracy_batch"],
            "int8_accuracy": models[name]["accuracy_batch"],
            "int8_p50_ms": models[name]["p50_ms"],
            "size_mb": models[name]["size_bytes"] / 1e6,
        }
        for name in variants
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--rows", type=int, default=5000, help="SST-2 training rows (seeded sample)")
    parser.add_argument("--val-rows", type=int, default=872, help="validation rows, from the training file")
    parser.add_argument("--layers", default="6,3,2", help="student sizes: encoder layers kept")
    parser.add_argument("--prune", default="0.25,0.5", help="shares pruned from the full-size direct student")
    parser.add_argument("--epochs", type=int, default=3, help="the students'")
    parser.add_argument("--teacher-epochs", type=int, help="default: teacher.epochs")
    parser.add_argument("--dev-rows", type=int, help="score on the first N dev rows only (default: all)")
    parser.add_argument("--latency-rows", type=int, default=300, help="dev rows timed one at a time")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.root)
    train_rows, val_rows = train_and_val(params, args.rows, args.val_rows)
    dev = sst2(params, "dev.tsv").iloc[: args.dev_rows]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    distill = params.train.distill
    teacher = params.teacher.model_copy(update={"epochs": args.teacher_epochs or params.teacher.epochs})
    print(
        f"{len(train_rows)} SST-2 training rows, {len(val_rows)} validation rows, scored on dev ({len(dev)} rows); "
        f"teacher {teacher.base_model} ({teacher.epochs} epochs), students from {params.train.base_model} "
        f"({args.epochs} epochs, distillation T={distill.temperature}, alpha={distill.alpha}); {device}"
    )
    student = params.train.model_copy(update={"epochs": args.epochs, "eval_steps": None})
    runs: list[tuple[str, TrainConfig, bool]] = [("teacher", teacher_config(params.train, teacher), False)]
    sizes = [int(n) for n in args.layers.split(",")]
    for layers in sizes:
        sized = student.model_copy(update={"encoder_layers": layers})
        runs += [(f"{layers}-layer direct", sized, False), (f"{layers}-layer distilled", sized, True)]
    results: dict[str, dict[str, Any]] = {}
    soft_labels: np.ndarray | None = None
    with tempfile.TemporaryDirectory() as work:
        for name, config, distilled in tqdm(runs, desc="models", unit="model"):
            model_dir = Path(work) / name.replace(" ", "-")
            found = train(
                train_rows,
                val_rows,
                LABELS,
                config,
                resolve_base_model(config.base_model, params.root),
                model_dir,
                Path(work) / "run",
                soft_labels=soft_labels if distilled else None,
            )
            shutil.rmtree(Path(work) / "run", ignore_errors=True)
            if name == "teacher":
                soft_labels = torch_logits(model_dir, list(train_rows[TEXT]), 64, config.max_length)
            full_size = name == f"{max(sizes)}-layer direct"
            shares = [float(x) for x in args.prune.split(",") if x] if full_size else []
            measured = serving(params, model_dir, dev, args.latency_rows, shares, list(val_rows[TEXT]))
            for variant, found_variant in measured.items():
                label = name if variant == INT8 else f"{name}, {variant}"
                results[label] = {
                    "minutes": found["train_seconds"] / 60,
                    "layers": found["encoder_layers"],
                    **found_variant,
                }
    reference = results.get(f"{max(sizes)}-layer direct")
    print(
        f"\n{'model':<32} {'layers':>6} {'train min':>9} {'dev torch':>9} {'dev int8':>8} {'int8 p50 ms':>11} "
        f"{'MB':>6}   int8 speed-up   int8 acc change"
    )
    for name, found in results.items():
        line = (
            f"{name:<32} {found['layers']:>6} {found['minutes']:>9.2f} {found['torch_accuracy']:>9.4f} "
            f"{found['int8_accuracy']:>8.4f} {found['int8_p50_ms']:>11.2f} {found['size_mb']:>6.1f}"
        )
        if reference:
            line += (
                f"   {reference['int8_p50_ms'] / found['int8_p50_ms']:>12.2f}x"
                f"   {found['int8_accuracy'] - reference['int8_accuracy']:>+15.4f}"
            )
        print(line)
    if reference:
        print(f"(speed-up and accuracy change against the {reference['layers']}-layer direct student, int8)")


if __name__ == "__main__":
    main()
