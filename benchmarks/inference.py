"""PyTorch fp32 vs ONNX fp32 vs ONNX int8, side by side, on the pipeline's own models.

Run after the pipeline (`make run` or `dvc repro`):

    python benchmarks/inference.py [--texts ../shared/data/sst2/dev.tsv] [--threads 2]

Prints latency p50/p95 at batch 1, throughput at batch 32, accuracy where the
texts are labelled, and model sizes, with ratios against PyTorch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tasks.config import load_params
from tasks.export import MODEL_FILE
from tasks.ingest import read_file
from tasks.io import dir_size, read_table
from tasks.onnx_model import OnnxClassifier
from tasks.quantize import INT8_FILE

Predict = Callable[[Sequence[str]], np.ndarray]


def torch_predictor(model_dir: Path, max_length: int, threads: int) -> Predict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()

    def predict(texts: Sequence[str]) -> np.ndarray:
        with torch.inference_mode():
            batch = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            return model(**batch).logits.numpy()

    return predict


def measure(name: str, predict: Predict, texts: list[str], warmup: int = 10) -> dict[str, float]:
    for text in texts[:warmup]:
        predict([text])
    latencies = []
    for text in tqdm(texts, desc=f"{name} batch 1", leave=False):
        started = time.perf_counter()
        predict([text])
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    logits = np.concatenate([predict(texts[i:i + 32]) for i in range(0, len(texts), 32)])
    throughput = len(texts) / (time.perf_counter() - started)
    quantiles = statistics.quantiles(latencies, n=20)
    return {"p50_ms": statistics.median(latencies), "p95_ms": quantiles[18], "batch32_per_s": throughput,
            "logits": logits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--texts", type=Path, help="CSV/TSV/JSONL file (default: the pipeline's test split)")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    params = load_params(args.root)
    rows = read_file(args.texts, params.data) if args.texts else read_table(params.path("test_split"))
    rows = rows.iloc[:args.limit]
    texts, truth = list(rows["text"]), list(rows["label"])
    onnx_fp32 = OnnxClassifier(params.path("onnx"), MODEL_FILE, threads=args.threads)
    onnx_int8 = OnnxClassifier(params.path("quantized"), INT8_FILE, threads=args.threads)
    labels = onnx_fp32.info.labels
    candidates = {
        "pytorch fp32": (torch_predictor(params.path("model"), params.train.max_length, args.threads),
                         dir_size(params.path("model"))),
        "onnx fp32": (onnx_fp32.logits, (params.path("onnx") / MODEL_FILE).stat().st_size),
        "onnx int8": (onnx_int8.logits, (params.path("quantized") / INT8_FILE).stat().st_size),
    }
    results = {name: {**measure(name, fn, texts), "size_mb": size / 1e6} for name, (fn, size) in candidates.items()}
    base = results["pytorch fp32"]
    print(f"{len(texts)} texts, {args.threads} threads\n")
    print(f"{'model':<14}{'p50 ms':>9}{'p95 ms':>9}{'b1 x':>7}{'b32/s':>9}{'b32 x':>7}{'MB':>8}{'acc b32':>9}")
    labelled = set(truth) <= set(labels)  # texts from another label set: accuracy means nothing
    for name, r in results.items():
        accuracy = np.mean([labels[i] == t for i, t in zip(r["logits"].argmax(1), truth)]) if labelled else float("nan")
        print(f"{name:<14}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{base['p50_ms'] / r['p50_ms']:>7.2f}"
              f"{r['batch32_per_s']:>9.1f}{r['batch32_per_s'] / base['batch32_per_s']:>7.2f}"
              f"{r['size_mb']:>8.1f}{accuracy:>9.4f}")


if __name__ == "__main__":
    main()
