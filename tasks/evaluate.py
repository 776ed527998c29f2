"""Stage `evaluate`: the candidate PyTorch model on the held-out test split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import Params
from tasks.io import LABEL, TEXT, atomic_path, read_table, write_json
from tasks.metrics import classification_report


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


def run(params: Params) -> None:
    """Stage entry point: test metrics, the PyTorch logits (reference for parity), confusion data."""
    test = read_table(params.path("test_split"))
    model_dir = params.path("model")
    labels = model_labels(model_dir)
    logits = torch_logits(model_dir, list(test[TEXT]), params.evaluate.batch_size, params.train.max_length)
    predicted = [labels[i] for i in logits.argmax(axis=1)]
    report = classification_report(list(test[LABEL]), predicted, labels)
    save_predictions(params.path("predictions"), logits, test)
    write_json(params.path("metrics") / "evaluate.json", report)
    confusion = pd.DataFrame({"actual": test[LABEL], "predicted": predicted})
    with atomic_path(params.path("reports") / "confusion.csv") as tmp:
        confusion.to_csv(tmp, index=False)
    print(f"evaluate: accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f} on {report['n']} rows")
