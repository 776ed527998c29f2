"""Adversarial training (FGM) against plain fine-tuning, in one run: accuracy on clean and on perturbed text.

Both train train.base_model with the train stage's code on the same seeded sample of SST-2
training rows (validation: another seeded sample of the training file), for the same epochs;
one with train.adversarial fgm at each --epsilon. Each model is scored with PyTorch on SST-2's
dev split three ways:

- clean: as written;
- typos: in each sentence, every word of 4 letters or more gets, with probability --typo-rate,
  two neighbouring letters swapped or one letter dropped (seeded per sentence);
- synonyms: the augment stage's synonym swap (WordNet, Apertium's tagger) with augment.synonym's
  replace_fraction, one variant per sentence (seeded per sentence).

Run after `make install`, offline:

    python benchmarks/adversarial.py [--rows 2000] [--epochs 3] [--epsilon 1.0 --epsilon 0.3]

Prints per model: training minutes, accuracy on each text set, and the drop from clean.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from sst2_rows import LABELS, sst2, train_and_val
from tqdm import tqdm

from tasks.lib.augmentation.synonym import SynonymSwapper
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import AdversarialConfig, load_params
from tasks.lib.training.logits import torch_logits
from tasks.lib.training.models import model_labels, resolve_base_model
from tasks.lib.training.trainer import train


def with_typos(text: str, rate: float, seed: int) -> str:
    """Swap two neighbouring letters or drop one, in each long word with probability `rate`.

    Written here rather than taken from nlpaug: two edits, seeded per sentence, no extra dependency.
    """
    rng = random.Random(seed)
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) >= 4 and word.isalpha() and rng.random() < rate:
            at = rng.randrange(1, len(word) - 1)
            words[i] = (
                word[:at] + word[at + 1] + word[at] + word[at + 2 :]
                if rng.random() < 0.5
                else word[:at] + word[at + 1 :]
            )
    return " ".join(words)


def accuracy(model_dir: Path, texts: list[str], truth: list[str], max_length: int) -> float:
    names = model_labels(model_dir)
    predicted = np.argmax(torch_logits(model_dir, texts, 64, max_length), axis=1)
    return float(np.mean([names[i] == label for i, label in zip(predicted, truth, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--rows", type=int, default=2000, help="SST-2 training rows (seeded sample)")
    parser.add_argument("--val-rows", type=int, default=872, help="validation rows, from the training file")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--epsilon", type=float, action="append", help="FGM step lengths (default: train.adversarial's)"
    )
    parser.add_argument("--typo-rate", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.root)
    train_rows, val_rows = train_and_val(params, args.rows, args.val_rows)
    dev = sst2(params, "dev.tsv")
    clean = list(dev[TEXT])
    swapper = SynonymSwapper(
        params.path("cache") / "nltk_data",
        params.augment.synonym.replace_fraction,
        params.augment.synonym.protected_words,
    )
    swapped = [
        found[0] if found else text
        for text, found in zip(clean, swapper.variants(clean, [str(i) for i in range(len(clean))], 1), strict=True)
    ]
    text_sets = {
        "clean": clean,
        "typos": [with_typos(t, args.typo_rate, i) for i, t in enumerate(clean)],
        "synonyms": swapped,
    }
    changed = {name: sum(a != b for a, b in zip(clean, texts, strict=True)) for name, texts in text_sets.items()}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(
        f"{len(train_rows)} SST-2 training rows, {args.epochs} epochs, {params.train.base_model}; dev {len(dev)} rows, "
        f"changed by typos {changed['typos']}, by synonyms {changed['synonyms']}; {device}"
    )
    settings = [AdversarialConfig(method="none", epsilon=1.0)]
    settings += [AdversarialConfig(method="fgm", epsilon=e) for e in args.epsilon or [params.train.adversarial.epsilon]]
    results = {}
    for adversarial in tqdm(settings, desc="models", unit="model"):
        name = "plain" if adversarial.method == "none" else f"fgm eps={adversarial.epsilon:g}"
        config = params.train.model_copy(update={"epochs": args.epochs, "eval_steps": None, "adversarial": adversarial})
        with tempfile.TemporaryDirectory() as work:
            model_dir = Path(work) / "model"
            found = train(
                train_rows,
                val_rows,
                LABELS,
                config,
                resolve_base_model(config.base_model, params.root),
                model_dir,
                Path(work) / "run",
            )
            scores = {
                key: accuracy(model_dir, texts, list(dev[LABEL]), config.max_length) for key, texts in text_sets.items()
            }
        results[name] = {"minutes": found["train_seconds"] / 60, **scores}
    print(f"\n{'model':<14} {'train min':>9} {'clean':>7} {'typos':>7} {'synonyms':>8}   typo drop   synonym drop")
    for name, found in results.items():
        accuracies = f"{found['clean']:>7.4f} {found['typos']:>7.4f} {found['synonyms']:>8.4f}"
        drops = f"{found['clean'] - found['typos']:>+9.4f}   {found['clean'] - found['synonyms']:>+12.4f}"
        print(f"{name:<14} {found['minutes']:>9.2f} {accuracies}   {drops}")


if __name__ == "__main__":
    main()
