"""Stage `evaluate`: the candidate PyTorch model on the held-out test split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import Params
from tasks.evaluation import OVERALL, score
from tasks.io import LABEL, TEXT, atomic_path, read_table, write_json
from tasks.metrics import (
    classification_report,
    label_indices,
    reliability_bins,
    softmax,
)


def torch_logits(model_dir: Path, texts: Sequence[str], batch_size: int, max_length: int) -> np.ndarray:
    """Logits of a saved Hugging Face classifier, batched, dynamic padding, no grad."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
            out.append(model(**batch).logits.float().numpy())
    return np.concatenate(out)


def model_labels(model_dir: Path) -> list[str]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return [config.id2label[i] for i in range(config.num_labels)]


def save_predictions(path: Path, logits: np.ndarray, test: pd.DataFrame) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, logits=logits, labels=np.array(test[LABEL], dtype=str))


def load_predictions(path: Path) -> tuple[np.ndarray, list[str]]:
    with np.load(path, allow_pickle=False) as data:
        return data["logits"], [str(label) for label in data["labels"]]


def candidate_report(texts: list[str], y_true: np.ndarray, probabilities: np.ndarray, labels: list[str],
                     params: Params) -> dict[str, Any]:
    """The classification report, bootstrap intervals of its metrics, and the metrics of every slice."""
    config = params.evaluate
    report = classification_report(y_true, probabilities, labels, config.calibration_bins)
    scored = score(texts, y_true, {"model": probabilities}, labels, config)
    report["interval"] = {"confidence": config.bootstrap.confidence,
                          **{metric: scored[OVERALL]["model_interval"][metric] for metric in report
                             if isinstance(report[metric], float)}}
    report["slices"] = {name: {"n": found["n"], **{m: v for m, v in found.get("model", {}).items() if "." not in m}}
                        for name, found in scored.items() if name != OVERALL}
    return report


def run(params: Params) -> None:
    """Stage entry point: test metrics, the PyTorch logits (reference for parity), confusion and calibration data."""
    test = read_table(params.path("test_split"))
    model_dir = params.path("model")
    labels = model_labels(model_dir)
    texts = list(test[TEXT])
    logits = torch_logits(model_dir, texts, params.evaluate.batch_size, params.train.max_length)
    probabilities = softmax(logits)
    y_true = label_indices(list(test[LABEL]), labels)
    report = candidate_report(texts, y_true, probabilities, labels, params)
    save_predictions(params.path("predictions"), logits, test)
    write_json(params.path("metrics") / "evaluate.json", report)
    reports = params.path("reports")
    confusion = pd.DataFrame({"actual": test[LABEL], "predicted": [labels[i] for i in logits.argmax(axis=1)]})
    with atomic_path(reports / "confusion.csv") as tmp:
        confusion.to_csv(tmp, index=False)
    write_json(reports / "calibration.json", reliability_bins(y_true, probabilities, params.evaluate.calibration_bins))
    low, high = report["interval"]["accuracy"]
    print(f"evaluate: accuracy {report['accuracy']:.4f} ({report['interval']['confidence']:.0%} interval "
          f"{low:.4f}-{high:.4f}), macro-F1 {report['macro_f1']:.4f}, ECE {report['ece']:.4f} on {report['n']} rows")
