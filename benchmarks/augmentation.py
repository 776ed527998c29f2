"""Augmentation: engine throughput, and its effect on accuracy, on SST-2, in one run.

Throughput: sentences/s of each engine on SST-2 training sentences (synonym
swap including part-of-speech tagging; Apertium back-translation, both
directions, and the same round trip as a plain shell pipe, the floor it is
compared with; Marian when --marian-forward/--marian-backward name local models).

Effect: for each training-subset size and seed, a stratified SST-2 subset is
drawn; it is trained as is, with synonym variants and with back-translated
variants (each row gets one variant, filtered as the stage filters them), with
the train stage's code and params (train.base_model, MiniLM as shipped);
early stopping and the best checkpoint use 500 other SST-2 training rows;
accuracy is measured on SST-2 dev. Prints mean, spread and each run.

    python benchmarks/augmentation.py [--sizes 500 2000] [--seeds 3] [--skip-effect]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from tasks.lib.augmentation.backtranslate import (
    ApertiumTranslator,
    CachedTranslator,
    MarianTranslator,
    generation_settings,
)
from tasks.lib.augmentation.similarity import SentenceEmbedder
from tasks.lib.augmentation.synonym import SynonymSwapper
from tasks.lib.augmentation.variants import augment
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import load_params
from tasks.lib.data.readers import read_file
from tasks.lib.training.logits import torch_logits
from tasks.lib.training.models import model_labels, resolve_base_model
from tasks.lib.training.trainer import train
from tasks.lib.validation.features import map_labels

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
LABEL_MAP = {"0": "negative", "1": "positive"}


def sst2(name: str, data_config: Any) -> pd.DataFrame:
    rows = read_file(SST2 / name, data_config)
    return rows.assign(**{LABEL: list(map_labels(rows[LABEL], LABEL_MAP))})


def throughput(name: str, engine: Any, texts: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    engine(texts)
    seconds = time.perf_counter() - started
    return {
        "engine": name,
        "sentences": len(texts),
        "seconds": round(seconds, 2),
        "sentences/s": round(len(texts) / seconds, 1),
    }


def raw_pipe(texts: list[str], pivot: str) -> None:
    """The floor to compare with: both directions as one shell pipe, plain text, one sentence per line."""
    subprocess.run(
        f"apertium -u eng-{pivot} | apertium -u {pivot}-eng",
        shell=True,
        input="\n".join(texts),
        text=True,
        capture_output=True,
        check=True,
    )


def dev_accuracy(model_dir: Path, dev: pd.DataFrame, max_length: int) -> float:
    logits = torch_logits(model_dir, list(dev[TEXT]), 64, max_length)
    names = model_labels(model_dir)
    return float(np.mean([names[i] == gold for i, gold in zip(logits.argmax(-1), dev[LABEL], strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--throughput-rows", type=int, default=4000)
    parser.add_argument("--marian-forward")
    parser.add_argument("--marian-backward")
    parser.add_argument("--skip-effect", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.root)
    data_config = params.data.model_copy(update={"label_map": LABEL_MAP})
    pool = sst2("train.tsv", data_config)
    dev = sst2("dev.tsv", data_config)
    labels = list(params.data.labels)
    cache = Path(tempfile.mkdtemp(prefix="augment-bench-"))
    swapper = SynonymSwapper(
        cache / "nltk", params.augment.synonym.replace_fraction, params.augment.synonym.protected_words
    )
    pivot = params.augment.backtranslation.apertium.pivot
    apertium = ApertiumTranslator(pivot, params.augment.backtranslation.batch_size)
    sample = list(pool[TEXT].sample(n=args.throughput_rows, random_state=0))
    swapper.variants(sample[:50], [str(i) for i in range(50)], 1)  # WordNet loaded, tagger started once
    rows = [
        throughput(
            "synonym swap (POS-tagged, WordNet)",
            lambda t: swapper.variants(t, list(map(str, range(len(t)))), 1),
            sample,
        ),
        throughput("apertium eng->spa->eng", apertium.back_translate, sample),
        throughput("raw pipe: apertium -u eng-spa | apertium -u spa-eng", lambda t: raw_pipe(t, pivot), sample),
    ]
    ours, raw = rows[1]["sentences/s"], rows[2]["sentences/s"]
    if args.marian_forward and args.marian_backward:
        engine = MarianTranslator(
            args.marian_forward,
            args.marian_backward,
            params.augment.backtranslation.batch_size,
            generation_settings(params.augment.backtranslation.marian),
            0,
        )
        rows.append(throughput(f"marian ({engine.device})", engine.back_translate, sample[:500]))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(f"\nThroughput on {len(sample)} SST-2 training sentences ({device}):")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"back-translation against the raw Apertium pipe: {ours / raw:.2f}x (goal >= 0.8x)")
    if args.skip_effect:
        return

    base_model = resolve_base_model(params.train.base_model, params.root)
    embedder = SentenceEmbedder(resolve_base_model(params.augment.filters.similarity_model, params.root))
    translator = CachedTranslator(apertium, cache / "augment")
    settings = {"none": (0.0, 0.0), "synonym": (1.0, 0.0), "backtranslation": (0.0, 1.0)}
    results = []
    runs = [(size, seed, name) for size in args.sizes for seed in range(args.seeds) for name in settings]
    for size, seed, name in tqdm(runs, desc="effect runs"):
        shuffled = pool.sample(frac=1.0, random_state=seed)
        val = shuffled.groupby(LABEL, group_keys=False).head(250)
        rest = shuffled.drop(val.index)
        subset, _ = train_test_split(rest, train_size=size, stratify=rest[LABEL], random_state=seed)
        synonym_ratio, bt_ratio = settings[name]
        config = params.augment.model_copy(
            update={
                "seed": seed,
                "synonym": params.augment.synonym.model_copy(update={"ratio": synonym_ratio, "variants": 1}),
                "backtranslation": params.augment.backtranslation.model_copy(update={"ratio": bt_ratio}),
            }
        )
        rows_in, report = augment(subset.reset_index(drop=True), config, swapper, translator, embedder)
        train_config = params.train.model_copy(update={"seed": seed})
        with tempfile.TemporaryDirectory() as work:
            metrics = train(rows_in, val, labels, train_config, base_model, Path(work) / "model", Path(work) / "run")
            accuracy = dev_accuracy(Path(work) / "model", dev, train_config.max_length)
        results.append(
            {
                "train rows": size,
                "augmentation": name,
                "seed": seed,
                "rows trained": len(rows_in),
                "val accuracy": metrics["best_val_accuracy"],
                "dev accuracy": accuracy,
                "kept variants": report.get(name, {}).get("kept", 0),
            }
        )
        print(results[-1], flush=True)
    table = pd.DataFrame(results)
    summary = table.groupby(["train rows", "augmentation"], sort=False).agg(
        rows_trained=("rows trained", "mean"),
        dev_mean=("dev accuracy", "mean"),
        dev_std=("dev accuracy", "std"),
        dev_min=("dev accuracy", "min"),
        dev_max=("dev accuracy", "max"),
    )
    print(
        f"\nDev accuracy (SST-2 dev, {len(dev)} rows), {args.seeds} seeds per cell, "
        f"{Path(base_model).name}, train params as shipped:"
    )
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nEvery run:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
