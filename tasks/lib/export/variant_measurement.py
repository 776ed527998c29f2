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

from tasks.lib.artifacts import QuantizeMetrics, graph_files
from tasks.lib.config import PYTORCH_BASELINE, BenchmarkConfig, Task
from tasks.lib.evaluation.entity_metrics import entity_counts, logit_span_agreement, scores
from tasks.lib.evaluation.metrics import agreement
from tasks.lib.inference.onnx_classifier import BatchEncoder, ClassifierInfo, Engine, load_engine
from tasks.lib.inference.onnx_tagger import Tagger
from tasks.lib.inference.word_logits import sentence_tags
from tasks.lib.io import dir_size
from tasks.lib.training.parameter_efficient import load_trained

# logits(inputs, batch_size) -> array (rows, labels) in the order of inputs: a classifier's
# inputs are texts, a row each; a tagger's are sentences (lists of words), a row per word.
Logits = Callable[[Sequence[Any], int], np.ndarray]


def torch_engine(model_dir: Path, task: Task, threads: int | None) -> Engine:
    """The PyTorch model as an engine: the same feeds as the ONNX graphs, its logits out."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    if threads:
        torch.set_num_threads(threads)
    auto = AutoModelForTokenClassification if task == "token_classification" else AutoModelForSequenceClassification
    model = load_trained(auto, model_dir)

    def forward(feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(**{name: torch.from_numpy(array) for name, array in feed.items()}).logits.float().numpy()

    return Engine(set(inspect.signature(model.forward).parameters), forward, f"torch {torch.__version__}")


def logits_of(folder: Path, engine: Engine, task: Task) -> Logits:
    """What `engine` computes from inputs, tokenized and batched by length with `folder`'s tokenizer."""
    if task == "token_classification":
        return Tagger(folder, engine).logits
    encoder = BatchEncoder(folder, engine.inputs)
    return lambda texts, batch_size: encoder.run(texts, batch_size, engine.forward)


@dataclass
class Timings:
    """One model's measurements per round: batch-1 logits and latencies, batched logits and rows/s."""

    b1_parts: list[np.ndarray] = field(default_factory=list)  # per input, in order
    batched_parts: list[np.ndarray] = field(default_factory=list)  # per round, in order
    latencies_ms: list[list[float]] = field(default_factory=list)  # per round
    batched_rates: list[float] = field(default_factory=list)  # inputs/s per round

    @property
    def logits_b1(self) -> np.ndarray:
        return np.concatenate(self.b1_parts)

    @property
    def logits_batched(self) -> np.ndarray:
        return np.concatenate(self.batched_parts)

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
    models: dict[str, Logits], inputs: Sequence[Any], latency_rows: int, config: BenchmarkConfig
) -> dict[str, Timings]:
    """Batch-1 latency on the first `latency_rows` inputs and batched throughput on all, interleaved by round."""
    for logits in models.values():
        for one in inputs[: config.warmup]:
            logits([one], 1)
        logits(inputs[: config.batch_size], config.batch_size)  # and one batch: its shapes warm up too
    timings = {name: Timings() for name in models}
    single = np.array_split(np.arange(latency_rows), config.rounds)
    batched = np.array_split(np.arange(len(inputs)), config.rounds)
    with tqdm(total=config.rounds * len(models), desc="benchmark", unit="model-round") as progress:
        for round_ in range(config.rounds):
            for name, logits in models.items():
                timing = timings[name]
                timing.latencies_ms.append([])
                for row in single[round_]:
                    started = time.perf_counter()
                    timing.b1_parts.append(logits([inputs[row]], 1))
                    timing.latencies_ms[-1].append((time.perf_counter() - started) * 1000)
                share = [inputs[row] for row in batched[round_]]
                if share:  # more rounds than inputs leaves some rounds empty
                    started = time.perf_counter()
                    timing.batched_parts.append(logits(share, config.batch_size))
                    timing.batched_rates.append(len(share) / (time.perf_counter() - started))
                progress.update()
    return timings


def _accuracy(logits: np.ndarray, names: list[str], truth: Sequence[str]) -> float:
    return round(float(np.mean([names[i] == t for i, t in zip(logits.argmax(axis=1), truth, strict=True)])), 6)


def _entity_f1(logits: np.ndarray, names: list[str], gold: list[list[str]], types: list[str]) -> float:
    predicted = sentence_tags(logits, [len(tags) for tags in gold], names)
    return round(scores(entity_counts(gold, predicted, types))["micro"]["f1"], 6)


def _agreement(
    base: np.ndarray, other: np.ndarray, names: list[str], gold: list[list[str]], types: list[str] | None
) -> dict[str, Any]:
    """`metrics.agreement` of the rows; a tagger's also by entity spans."""
    found: dict[str, Any] = agreement(base, other)
    if types is not None:
        found["span_agreement"] = logit_span_agreement(base, other, [len(tags) for tags in gold], names, types)
    return found


def _label_changes(timing: Timings) -> float:
    """Share of the rows scored alone whose label differs inside their batch (the same rows, in order)."""
    alone = timing.logits_b1.argmax(axis=-1)
    return round(float(np.mean(alone != timing.logits_batched[: len(alone)].argmax(axis=-1))), 6)


def summarise(
    timings: dict[str, Timings],
    sizes: dict[str, int],
    fp32_onnx_size: int,
    names: list[str],
    truth: Sequence[list[str]],
    types: list[str] | None,
    config: BenchmarkConfig,
) -> dict[str, Any]:
    """Per model: latency, throughput, speed-ups, size, accuracy and agreement with PyTorch at both batch sizes.

    Args:
        truth: per input, its label (`[label]`) or, for a tagger, its words' tags.
        types: a tagger's entity types (its entity F1 and span agreement are measured too); None for a classifier.
    """
    base = timings[PYTORCH_BASELINE]
    latency_rows = len(base.b1_parts)
    gold = {"b1": list(truth[:latency_rows]), "batch": list(truth)}
    flat = {key: [label for labels in found for label in labels] for key, found in gold.items()}

    def scored(timing: Timings) -> dict[str, float]:
        logits = {"b1": timing.logits_b1, "batch": timing.logits_batched}
        found = {f"accuracy_{key}": _accuracy(logits[key], names, flat[key]) for key in logits}
        if types is not None:
            found |= {f"entity_f1_{key}": _entity_f1(logits[key], names, gold[key], types) for key in logits}
        return found

    reference = scored(base)
    models = {}
    for name, timing in timings.items():
        p50, rate, found = timing.p50_ms, timing.rows_per_s, scored(timing)
        drops = {key.replace("_b", "_drop_b"): round(reference[key] - value, 6) for key, value in found.items()}
        models[name] = {
            "p50_ms": round(p50, 3),
            "p95_ms": round(timing.p95_ms, 3),
            "batch_per_s": round(rate, 1),
            "speedup_b1": round(base.p50_ms / p50, 3),
            "speedup_batch": round(rate / base.rows_per_s, 3),
            "size_bytes": sizes[name],
            "size_ratio": round(sizes[name] / fp32_onnx_size, 4),
            **found,
            **drops,
            "agreement_b1": _agreement(base.logits_b1, timing.logits_b1, names, gold["b1"], types),
            "agreement_batch": _agreement(base.logits_batched, timing.logits_batched, names, gold["batch"], types),
            "batch_label_changes": _label_changes(timing),
        }
    return {
        "rows": len(truth),
        "latency_rows": latency_rows,
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
    inputs: Sequence[Any],
    truth: Sequence[list[str]],
    config: BenchmarkConfig,
    types: list[str] | None = None,
) -> QuantizeMetrics:
    """PyTorch fp32 and each ONNX variant (name -> file in `folder`) on the same labelled inputs.

    Args:
        inputs: texts, or for a tagger (`folder`'s task) sentences as lists of words.
        truth, types: as `summarise` takes them.

    Returns the record that `metrics/quantize.json` holds (see `summarise`).
    """
    info = ClassifierInfo.load(folder)
    latency_rows = min(len(inputs), config.latency_rows or len(inputs))
    engines = {name: load_engine(folder / file, config.threads) for name, file in variants.items()}
    models: dict[str, Logits] = {
        PYTORCH_BASELINE: logits_of(folder, torch_engine(model_dir, info.task, config.threads), info.task),
        **{name: logits_of(folder, engine, info.task) for name, engine in engines.items()},
    }
    sizes = {
        PYTORCH_BASELINE: dir_size(model_dir),
        **{name: sum((folder / part).stat().st_size for part in graph_files(file)) for name, file in variants.items()},
    }
    timings = time_models(models, inputs, latency_rows, config)
    report = summarise(timings, sizes, fp32_onnx.stat().st_size, info.labels, truth, types, config)
    for name, file in variants.items():
        report["models"][name]["file"] = file
        report["models"][name]["engine"] = engines[name].description
    return QuantizeMetrics.parse(report, "variant measurement")


def render(report: QuantizeMetrics) -> str:
    """The report as a Markdown table, PyTorch first; a tagger's with entity F1 and span agreement
    (rows are sentences, accuracy and agreement are of words)."""
    tagger = any(m.entity_f1_batch is not None for m in report.models.values())
    title = (
        f"## Serving variants against PyTorch fp32 ({report.rows} labelled {'sentences' if tagger else 'rows'}, "
        f"batch-1 latency on {report.latency_rows}, batch {report.batch_size}, {report.threads or 'all'} threads)"
    )
    columns = [
        "model", "runs in", "p50 ms", "p95 ms", "b1 speed-up", "rows/s", "batch speed-up", "size MB", "size vs fp32",
        "acc b1", "acc batch", "agree b1", "agree batch", "max logit diff", "moved by batching",
    ]  # fmt: skip
    if tagger:
        columns += ["entity F1 b1", "entity F1 batch", "span agree b1", "span agree batch"]
    lines = [title, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for name, m in report.models.items():
        cells = [
            name, m.engine or "torch", f"{m.p50_ms:.2f}", f"{m.p95_ms:.2f}", f"{m.speedup_b1:.2f}x",
            f"{m.batch_per_s:.0f}", f"{m.speedup_batch:.2f}x", f"{m.size_bytes / 1e6:.1f}", f"{m.size_ratio:.1%}",
            f"{m.accuracy_b1:.4f}", f"{m.accuracy_batch:.4f}",
            f"{m.agreement_b1.label_agreement:.4f}", f"{m.agreement_batch.label_agreement:.4f}",
            f"{max(m.agreement_b1.max_abs_logit_diff, m.agreement_batch.max_abs_logit_diff):.3f}",
            "" if m.batch_label_changes is None else f"{m.batch_label_changes:.2%}",
        ]  # fmt: skip
        if tagger:
            cells += [
                f"{m.entity_f1_b1 or 0:.4f}", f"{m.entity_f1_batch or 0:.4f}",
                f"{m.agreement_b1.span_agreement or 0:.4f}", f"{m.agreement_batch.span_agreement or 0:.4f}",
            ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
