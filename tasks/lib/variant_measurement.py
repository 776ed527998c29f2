"""Parity and speed of ONNX serving variants against PyTorch fp32, measured side by side.

Every model sees the same texts, tokenized the same way (the shipped
tokenizer, batched by length), with the same thread count. Warm-up calls are
excluded. The measurement is split into interleaved rounds (each round runs
every model on its share of the texts), and the headline figures are medians
over rounds (of each round's median latency, of each round's rows/s): a slow
spell of a shared machine then spoils a round of every model, and is outvoted,
instead of spoiling whichever model happened to run then.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tasks.lib.artifacts import PYTORCH_BASELINE, QuantizeMetrics, graph_files
from tasks.lib.config import BenchmarkConfig
from tasks.lib.io import dir_size
from tasks.lib.metrics import agreement
from tasks.lib.onnx_classifier import BatchEncoder, OnnxClassifier

# logits(texts, batch_size) -> array (len(texts), labels), in the order of texts
Logits = Callable[[Sequence[str], int], np.ndarray]


def torch_classifier(model_dir: Path, tokenizer_folder: Path, threads: int | None) -> Logits:
    """The PyTorch model behind the same tokenizer and length batching as the ONNX variants."""
    import torch
    from transformers import AutoModelForSequenceClassification

    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()
    encoder = BatchEncoder(tokenizer_folder, set(inspect.signature(model.forward).parameters))

    def forward(feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(**{name: torch.from_numpy(array) for name, array in feed.items()}).logits.float().numpy()

    return lambda texts, batch_size: encoder.run(texts, batch_size, forward)


@dataclass
class Timings:
    """One model's measurements: batch-1 logits and latencies, batched logits and rows/s, per round."""

    logits_b1: np.ndarray
    logits_batched: np.ndarray
    latencies_ms: list[list[float]] = field(default_factory=list)  # per round
    batched_rates: list[float] = field(default_factory=list)  # rows/s per round

    @property
    def p50_ms(self) -> float:
        return statistics.median(statistics.median(round_) for round_ in self.latencies_ms if round_)

    @property
    def p95_ms(self) -> float:
        return float(np.percentile([ms for round_ in self.latencies_ms for ms in round_], 95))

    @property
    def rows_per_s(self) -> float:
        return statistics.median(self.batched_rates)


def time_models(
    models: dict[str, Logits], texts: Sequence[str], latency_rows: int, config: BenchmarkConfig
) -> dict[str, Timings]:
    """Batch-1 latency on the first `latency_rows` texts and batched throughput on all, interleaved by round."""
    timings: dict[str, Timings] = {}
    for name, logits in models.items():
        for text in texts[: config.warmup]:
            logits([text], 1)
        width = logits(texts[: config.batch_size], config.batch_size).shape[1]
        timings[name] = Timings(np.zeros((latency_rows, width), np.float32), np.zeros((len(texts), width), np.float32))
    single = np.array_split(np.arange(latency_rows), config.rounds)
    batched = np.array_split(np.arange(len(texts)), config.rounds)
    with tqdm(total=config.rounds * len(models), desc="benchmark", unit="model-round") as progress:
        for round_ in range(config.rounds):
            for name, logits in models.items():
                timing = timings[name]
                timing.latencies_ms.append([])
                for row in single[round_]:
                    started = time.perf_counter()
                    timing.logits_b1[row] = logits([texts[row]], 1)[0]
                    timing.latencies_ms[-1].append((time.perf_counter() - started) * 1000)
                share = [texts[row] for row in batched[round_]]
                if share:  # more rounds than texts leaves some rounds empty
                    started = time.perf_counter()
                    timing.logits_batched[batched[round_]] = logits(share, config.batch_size)
                    timing.batched_rates.append(len(share) / (time.perf_counter() - started))
                progress.update()
    return timings


def _accuracy(logits: np.ndarray, names: list[str], truth: Sequence[str]) -> float:
    return round(float(np.mean([names[i] == t for i, t in zip(logits.argmax(axis=1), truth, strict=True)])), 6)


def summarise(
    timings: dict[str, Timings],
    sizes: dict[str, int],
    fp32_onnx_size: int,
    names: list[str],
    truth: Sequence[str],
    config: BenchmarkConfig,
) -> dict[str, Any]:
    """Per model: latency, throughput, speed-ups, size, accuracy and agreement with PyTorch at both batch sizes."""
    base = timings[PYTORCH_BASELINE]
    latency_truth = truth[: len(base.logits_b1)]
    base_acc_b1, base_acc = (
        _accuracy(base.logits_b1, names, latency_truth),
        _accuracy(base.logits_batched, names, truth),
    )
    models = {}
    for name, timing in timings.items():
        p50, rate = timing.p50_ms, timing.rows_per_s
        acc_b1, acc = _accuracy(timing.logits_b1, names, latency_truth), _accuracy(timing.logits_batched, names, truth)
        models[name] = {
            "p50_ms": round(p50, 3),
            "p95_ms": round(timing.p95_ms, 3),
            "batch_per_s": round(rate, 1),
            "speedup_b1": round(base.p50_ms / p50, 3),
            "speedup_batch": round(rate / base.rows_per_s, 3),
            "size_bytes": sizes[name],
            "size_ratio": round(sizes[name] / fp32_onnx_size, 4),
            "accuracy_b1": acc_b1,
            "accuracy_batch": acc,
            "accuracy_drop_b1": round(base_acc_b1 - acc_b1, 6),
            "accuracy_drop_batch": round(base_acc - acc, 6),
            "agreement_b1": agreement(base.logits_b1, timing.logits_b1),
            "agreement_batch": agreement(base.logits_batched, timing.logits_batched),
        }
    return {
        "rows": len(truth),
        "latency_rows": len(base.logits_b1),
        "batch_size": config.batch_size,
        "threads": config.threads,
        "rounds": config.rounds,
        "models": models,
    }


def measure_variants(
    model_dir: Path,
    folder: Path,
    variants: dict[str, str],
    fp32_onnx: Path,
    texts: Sequence[str],
    labels: Sequence[str],
    config: BenchmarkConfig,
) -> QuantizeMetrics:
    """PyTorch fp32 and each ONNX variant (name -> file in `folder`) on the same labelled texts.

    Returns the record that `metrics/quantize.json` holds (see `summarise`).
    """
    latency_rows = min(len(texts), config.latency_rows or len(texts))
    onnx_models = {name: OnnxClassifier(folder, file, config.threads) for name, file in variants.items()}
    models: dict[str, Logits] = {
        PYTORCH_BASELINE: torch_classifier(model_dir, folder, config.threads),
        **{name: model.logits for name, model in onnx_models.items()},
    }
    sizes = {
        PYTORCH_BASELINE: dir_size(model_dir),
        **{name: sum((folder / part).stat().st_size for part in graph_files(file)) for name, file in variants.items()},
    }
    timings = time_models(models, texts, latency_rows, config)
    names = next(iter(onnx_models.values())).info.labels
    report = summarise(timings, sizes, fp32_onnx.stat().st_size, names, labels, config)
    for name, file in variants.items():
        report["models"][name]["file"] = file
        report["models"][name]["engine"] = onnx_models[name].engine.description
    return QuantizeMetrics.parse(report, "variant measurement")


def render(report: QuantizeMetrics) -> str:
    """The report as a Markdown table, PyTorch first."""
    title = (
        f"## Serving variants against PyTorch fp32 ({report.rows} labelled rows, batch-1 latency on "
        f"{report.latency_rows}, batch {report.batch_size}, {report.threads or 'all'} threads)"
    )
    header = (
        "| model | runs in | p50 ms | p95 ms | b1 speed-up | rows/s | batch speed-up | size MB | size vs fp32 | "
        "acc b1 | acc batch | agree b1 | agree batch | max logit diff |"
    )
    lines = [title, "", header, "|---" * 14 + "|"]
    for name, m in report.models.items():
        lines.append(
            f"| {name} | {m.engine or 'torch'} | {m.p50_ms:.2f} | {m.p95_ms:.2f} | {m.speedup_b1:.2f}x | "
            f"{m.batch_per_s:.0f} | {m.speedup_batch:.2f}x | {m.size_bytes / 1e6:.1f} | "
            f"{m.size_ratio:.1%} | {m.accuracy_b1:.4f} | {m.accuracy_batch:.4f} | "
            f"{m.agreement_b1.label_agreement:.4f} | {m.agreement_batch.label_agreement:.4f} | "
            f"{max(m.agreement_b1.max_abs_logit_diff, m.agreement_batch.max_abs_logit_diff):.3f} |"
        )
    return "\n".join(lines) + "\n"
