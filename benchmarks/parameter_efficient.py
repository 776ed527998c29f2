"""Parameter-efficient tuning against full fine-tuning, in one run: dev accuracy, trainable share, minutes.

Every method trains the same model (train.base_model) with the train stage's code
(tasks/lib/training) on the same SST-2 training rows (a seeded sample), for the same epochs,
and is scored on SST-2's dev split each epoch (the best epoch is kept, as the stage does):

- full: every weight, at train.learning_rate;
- lora, ia3, bitfit, adapter (bottleneck adapters), prefix (prefix tuning): train.peft set to
  each, at the learning rate that method is usually run at (a few times to a few hundred times
  full fine-tuning's: far fewer weights move); override with --lr METHOD=VALUE.

Run after `make install`, offline:

    python benchmarks/parameter_efficient.py [--rows 2000] [--epochs 3] [--methods full,lora,ia3,bitfit,adapter,prefix]

Prints, per method: dev accuracy, trainable parameters and share, training minutes and rows/s,
and each method's accuracy and minutes against full fine-tuning's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from sst2_rows import sst2
from tqdm import tqdm

from tasks.lib.config import load_params
from tasks.lib.training.models import resolve_base_model
from tasks.lib.training.trainer import train

# Usual learning rates: LoRA (Hu et al.) 2e-4 to 5e-4 on GLUE, IA3 (Liu et al.) 3e-3, BitFit
# (Ben Zaken et al.) 1e-4 to 1e-3, bottleneck adapters (Houlsby et al.; Pfeiffer et al.) 1e-4 to
# 1e-3, prefix tuning of encoders without a reparameterization (P-tuning v2, Liu et al.) 5e-3 to 1e-2.
LEARNING_RATES = {"lora": 5e-4, "ia3": 3e-3, "bitfit": 1e-3, "adapter": 1e-3, "prefix": 1e-2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--rows", type=int, default=2000, help="SST-2 training rows (seeded sample)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--methods", default="full,lora,ia3,bitfit,adapter,prefix")
    parser.add_argument("--lr", action="append", default=[], help="METHOD=VALUE, e.g. lora=3e-4")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.root)
    rates = {**LEARNING_RATES, "full": params.train.learning_rate}
    rates |= {method: float(value) for method, _, value in (item.partition("=") for item in args.lr)}
    labels = ["negative", "positive"]
    train_rows = sst2(params, "train.tsv").sample(n=args.rows, random_state=0).reset_index(drop=True)
    dev_rows = sst2(params, "dev.tsv")
    base_model = resolve_base_model(params.train.base_model, params.root)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(
        f"{len(train_rows)} SST-2 training rows, {args.epochs} epochs, dev {len(dev_rows)} rows; "
        f"{params.train.base_model}; {device}"
    )
    results = {}
    for method in tqdm(args.methods.split(","), desc="methods", unit="method"):
        config = params.train.model_copy(
            update={"peft": method, "learning_rate": rates[method], "epochs": args.epochs, "eval_steps": None}
        )
        with tempfile.TemporaryDirectory() as work:
            found = train(train_rows, dev_rows, labels, config, base_model, Path(work) / "model", Path(work) / "run")
        results[method] = found
    full = results.get("full")
    print(
        f"\n{'method':<8} {'lr':>8} {'dev acc':>8} {'trainable':>11} {'share':>8} {'minutes':>8} {'rows/s':>7}"
        + ("   acc vs full   time vs full" if full else "")
    )
    for method, found in results.items():
        line = (
            f"{method:<8} {rates[method]:>8.0e} {found['best_val_accuracy']:>8.4f} "
            f"{found['trainable_parameters']:>11,} {found['trainable_share']:>8.2%} "
            f"{found['train_seconds'] / 60:>8.2f} {found['samples_per_s']:>7.1f}"
        )
        if full:
            line += (
                f"   {found['best_val_accuracy'] - full['best_val_accuracy']:+11.4f}"
                f"   {found['train_seconds'] / full['train_seconds']:>11.2f}x"
            )
        print(line)


if __name__ == "__main__":
    main()
