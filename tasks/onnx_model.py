"""Load and run an exported classifier with ONNX Runtime: no torch on this path.

A model folder holds the ONNX graph, `tokenizer.json` and `classifier.json`
(label names and the maximum sequence length), so it is usable on its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CLASSIFIER_FILE = "classifier.json"
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class ClassifierInfo:
    labels: list[str]
    max_length: int

    def save(self, folder: Path) -> None:
        (folder / CLASSIFIER_FILE).write_text(json.dumps({"labels": self.labels, "max_length": self.max_length},
                                                         indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> ClassifierInfo:
        data = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
        return cls(labels=[str(label) for label in data["labels"]], max_length=int(data["max_length"]))


def session_options(threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


class OnnxClassifier:
    """Batched text classification with an ONNX model folder."""

    def __init__(self, folder: Path, model_file: str, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = folder
        self.info = ClassifierInfo.load(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(self.info.max_length)
        self.tokenizer.enable_padding()
        self.session = ort.InferenceSession(str(folder / model_file), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits, shape (len(texts), number of labels)."""
        out = []
        for start in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(list(texts[start:start + batch_size]))
            feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
            if "token_type_ids" in self.input_names:
                feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
            out.append(self.session.run(["logits"], feed)[0])
        return np.concatenate(out) if out else np.zeros((0, len(self.info.labels)), dtype=np.float32)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        return [self.info.labels[i] for i in self.logits(texts, batch_size).argmax(axis=1)]
