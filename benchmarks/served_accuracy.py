"""Accuracy of the model a workspace serves, on a labelled file, through the serving code path.

The registry's production version is loaded as `textclf serve` loads it (the graph the gate chose,
verified and warmed up) and scores every row of the file at each batch size; the DAG's own figures
come from its test split, this one from any labelled file (by default SST-2's dev.tsv, which is the
val split of a workspace whose data.source is ../shared/data/sst2).

A tagger is scored on the workspace's test split: each sentence's words joined by spaces are
served as raw text, as `textclf predict --json` answers it, and each answered entity counts when
its character offsets begin and end exactly at the words of a gold entity of the same type
(entity F1 over exact spans, with its bootstrap interval over sentences).

Run in a workspace with a production model, offline:

    python benchmarks/served_accuracy.py [--file ../shared/data/sst2/dev.tsv] [--batch-sizes 32,1]

Prints the version and its graph, then per batch size the accuracy (a tagger's entity F1) with its
95% bootstrap interval and the rows per second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import cast

import numpy as np
from sst2_rows import SST2

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params, load_params
from tasks.lib.data.readers import read_file
from tasks.lib.data.sentences import as_sentences, iob1_to_iob2
from tasks.lib.evaluation.entity_metrics import bootstrap_f1, entity_counts, scores
from tasks.lib.evaluation.metrics import bootstrap_samples, interval
from tasks.lib.inference.onnx_tagger import Entity, Tagged
from tasks.lib.inference.production_model import Prediction, ProductionModel
from tasks.lib.io import read_table
from tasks.lib.validation.features import map_labels


def served_tags(words: list[str], entities: list[Entity]) -> list[str]:
    """IOB2 tags of `words` (served joined by single spaces) from the entities answered for that text;
    an entity whose offsets do not begin and end at word boundaries tags nothing (it scores as a miss)."""
    starts, ends, at = {}, {}, 0
    for index, word in enumerate(words):
        starts[at], ends[at + len(word)] = index, index
        at += len(word) + 1
    tags = ["O"] * len(words)
    for entity in entities:
        first, last = starts.get(entity.start), ends.get(entity.end)
        if first is not None and last is not None and last >= first:
            tags[first : last + 1] = [f"B-{entity.type}"] + [f"I-{entity.type}"] * (last - first)
    return tags


def score_tagger(params: Params, batch_sizes: list[int], resamples: int) -> None:
    """Entity F1 over exact spans of the served answers to the test split's sentences."""
    test = read_table(params.path("test_split"))
    sentences, gold = as_sentences(test[TEXT]), [iob1_to_iob2(tags) for tags in as_sentences(test[LABEL])]
    types = list(params.data.labels)
    model = ProductionModel(params.path("registry"), params.serve.threads)
    status = model.status()
    if status["version"] is None:
        raise SystemExit(f"{params.path('registry')}: nothing to serve ({status['error']})")
    texts = [" ".join(words) for words in sentences]
    print(f"test split: {len(texts)} sentences; serving {status['version']} ({status['variant']}, {status['engine']})")
    for batch_size in batch_sizes:
        start = time.perf_counter()
        _, replies = model.predict(texts, batch_size)
        seconds = time.perf_counter() - start
        tagged = cast(list[Tagged], replies)
        predicted = [served_tags(words, reply.entities) for words, reply in zip(sentences, tagged, strict=True)]
        counts = entity_counts(gold, predicted, types)
        found = scores(counts)
        low, high = bootstrap_f1(counts, resamples, seed=0)
        per_type = ", ".join(f"{name} {found[name]['f1']:.4f}" for name in types)
        print(
            f"batch {batch_size:>3}: entity F1 {found['micro']['f1']:.4f} (95% CI {low:.4f}-{high:.4f}); "
            f"{per_type}; {len(texts) / seconds:,.0f} sentences/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=SST2 / "dev.tsv", help="labelled rows (any reader format)")
    parser.add_argument("--batch-sizes", default="32,1", help="comma-separated")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the interval")
    args = parser.parse_args()

    params = load_params(Path.cwd())
    if params.task == "token_classification":
        score_tagger(params, [int(size) for size in args.batch_sizes.split(",")], args.resamples)
        return
    frame = read_file(args.file, params.data)
    gold = list(map_labels(frame[LABEL], params.data.label_map))
    texts = list(frame[TEXT])
    model = ProductionModel(params.path("registry"), params.serve.threads)
    status = model.status()
    if status["version"] is None:
        raise SystemExit(f"{params.path('registry')}: nothing to serve ({status['error']})")
    unknown = sorted(set(gold) - set(status["labels"]))
    if unknown:
        raise SystemExit(
            f"{args.file}: labels {unknown} are not the model's {status['labels']} (map them with data.label_map)"
        )
    print(f"{args.file}: {len(texts)} rows; serving {status['version']} ({status['variant']}, {status['engine']})")
    samples = bootstrap_samples(len(texts), args.resamples, seed=0)
    for batch_size in (int(size) for size in args.batch_sizes.split(",")):
        start = time.perf_counter()
        _, replies = model.predict(texts, batch_size)
        seconds = time.perf_counter() - start
        if not isinstance(replies[0], Prediction):
            raise SystemExit(f"{status['version']} tags entities: this script scores text classifiers")
        predictions = cast(list[Prediction], replies)  # a model answers every text alike
        correct = np.asarray([reply.label == truth for reply, truth in zip(predictions, gold, strict=True)])
        low, high = interval(correct[samples].mean(axis=1), 0.95)
        print(
            f"batch {batch_size:>3}: accuracy {correct.mean():.4f} (95% CI {low:.4f}-{high:.4f}), "
            f"{len(texts) / seconds:,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
