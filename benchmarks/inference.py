"""PyTorch fp32 against every serving variant the quantize stage built, on any labelled file.

The quantize stage measures the same thing on the test split (metrics/quantize.json,
reports/quantize.md); this script re-runs that measurement on other texts, for
example SST-2 dev, after the pipeline has run (`make run` or `dvc repro`):

    python benchmarks/inference.py --texts ../shared/data/sst2/dev.tsv [--threads 2] [--rounds 5]

Prints the table (latency p50/p95 at batch 1, throughput at the batch size,
speed-ups against PyTorch, sizes, accuracy and label agreement at both batch
sizes) and which variant the gate's rules would choose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.lib.artifacts import MODEL_FILE, variant_file
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import load_params
from tasks.lib.data.readers import read_file
from tasks.lib.evaluation.gate_rules import choose_variant
from tasks.lib.export.variant_measurement import measure_variants, render
from tasks.lib.inference.onnx_classifier import ClassifierInfo
from tasks.lib.io import read_table
from tasks.lib.validation.features import map_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--texts", type=Path, help="labelled CSV/TSV/JSONL/Parquet (default: the test split)")
    parser.add_argument("--limit", type=int, help="use only the first N rows")
    parser.add_argument("--threads", type=int, help="default: quantize.benchmark.threads")
    parser.add_argument("--rounds", type=int, help="default: quantize.benchmark.rounds")
    args = parser.parse_args()
    params = load_params(args.root)
    config = params.quantize.benchmark.model_copy(
        update={key: value for key, value in (("threads", args.threads), ("rounds", args.rounds)) if value is not None}
    )
    rows = read_file(args.texts, params.data) if args.texts else read_table(params.path("test_split"))
    rows = rows.iloc[: args.limit] if args.limit else rows
    labels = list(map_labels(rows[LABEL], params.data.label_map))
    folder = params.path("quantized")
    files = {name: variant_file(name, variant.runtime) for name, variant in params.quantize.variants.items()}
    variants = {name: file for name, file in files.items() if (folder / file).exists()}
    if not variants:
        raise SystemExit(f"no serving variants in {folder}: run the pipeline first (make run or dvc repro)")
    known = ClassifierInfo.load(folder).labels
    if not set(labels) <= set(known):
        raise SystemExit(
            f"{args.texts}: labels {sorted(set(labels) - set(known))} are not the model's {known}; "
            "map them with data.label_map in params.yaml (e.g. {0: negative, 1: positive} for SST-2)"
        )
    report = measure_variants(
        params.path("model"),
        folder,
        variants,
        params.path("onnx") / MODEL_FILE,
        list(rows[TEXT]),
        [[label] for label in labels],
        config,
    )
    print(render(report))
    chosen, _ = choose_variant(params.gate.serving, report)
    print(f"The gate's serving rules would choose: {chosen or 'none (no variant passes gate.serving)'}")


if __name__ == "__main__":
    main()
