"""A recipe's train settings against params.yaml's over several seeds, as `textclf tune` trains them.

Both train on the workspace's augmented rows (a seeded sample of `tune.train_rows`, as each tune
trial does) with the stage's code, once per seed, and are scored on the val split (what the search
picked on) and on the test split (which it never saw). Tells whether a search's best trial
(recipes/tuned.yaml) beats the shipped settings beyond seed noise and selection.

Run in a workspace after `dvc repro augment` (and `textclf tune`), offline:

    python benchmarks/recipe_seeds.py [--recipe tuned] [--seeds 1,2,3]

Prints each seed's val and test accuracy for both, their means and the mean gains.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import load_params
from tasks.lib.io import read_table
from tasks.lib.training.logits import torch_logits
from tasks.lib.training.models import model_labels, resolve_base_model
from tasks.lib.training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--recipe", default="tuned", help="recipes/NAME.yaml; its `train` section is compared")
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    params = load_params(args.root)
    changes = yaml.safe_load((args.root / "recipes" / f"{args.recipe}.yaml").read_text())["train"]
    rows = read_table(params.path("augmented"))
    if params.tune.train_rows is not None and len(rows) > params.tune.train_rows:
        rows = rows.sample(n=params.tune.train_rows, random_state=params.tune.seed).reset_index(drop=True)
    val, test = read_table(params.path("val_split")), read_table(params.path("test_split"))
    base_model = resolve_base_model(params.train.base_model, params.root)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{len(rows)} training rows, val {len(val)}, test {len(test)} rows; {args.recipe}: {changes}")
    names = ("shipped", args.recipe)
    scores: dict[tuple[str, str], list[float]] = {(name, split): [] for name in names for split in ("val", "test")}
    for seed in tqdm(seeds, desc="seeds", unit="seed"):
        for name, update in zip(names, ({}, changes), strict=True):
            config = params.train.model_copy(update={**update, "seed": seed})
            with tempfile.TemporaryDirectory() as work:
                model = Path(work) / "m"
                found = train(rows, val, list(params.data.labels), config, base_model, model, Path(work) / "r")
                logits = torch_logits(model, list(test[TEXT]), 64, config.max_length)
                predicted = np.array(model_labels(model))[logits.argmax(axis=1)]
            scores[(name, "val")].append(found["best_val_accuracy"])
            scores[(name, "test")].append(float((predicted == test[LABEL].to_numpy()).mean()))
    header = "".join(f" {split + ' ' + name:>14}" for split in ("val", "test") for name in names)
    print(f"\n{'seed':>6}{header}")
    for i, seed in enumerate(seeds):
        print(f"{seed:>6}" + "".join(f" {scores[(n, s)][i]:>14.4f}" for s in ("val", "test") for n in names))
    means = {key: statistics.mean(values) for key, values in scores.items()}
    print(f"{'mean':>6}" + "".join(f" {means[(n, s)]:>14.4f}" for s in ("val", "test") for n in names))
    for split in ("val", "test"):
        print(f"{split} gain of {args.recipe}: {means[(args.recipe, split)] - means[('shipped', split)]:+.4f}")


if __name__ == "__main__":
    main()
