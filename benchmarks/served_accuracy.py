"""Accuracy of the model a workspace serves, on a labelled file, through the serving code path.

The registry's production version is loaded as `textclf serve` loads it (the graph the gate chose,
verified and warmed up) and scores every row of the file at each batch size; the DAG's own figures
come from its test split, this one from any labelled file (by default SST-2's dev.tsv, which is the
val split of a workspace whose data.source is ../shared/data/sst2).

Run in a workspace with a production model, offline:

    python benchmarks/served_accuracy.py [--file ../shared/data/sst2/dev.tsv] [--batch-sizes 32,1]

Prints the version and its graph, then per batch size the accuracy with its 95% bootstrap interval
and the rows per second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import cast

import numpy as np
from sst2_rows import SST2

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import load_params
from tasks.lib.data.readers import read_file
from tasks.lib.evaluation.metrics import bootstrap_samples, interval
from tasks.lib.inference.production_model import Prediction, ProductionModel
from tasks.lib.validation.features import map_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=SST2 / "dev.tsv", help="labelled rows (any reader format)")
    parser.add_argument("--batch-sizes", default="32,1", help="comma-separated")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the interval")
    args = parser.parse_args()

    params = load_params(Path.cwd())
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
