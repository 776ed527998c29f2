"""PyTorch logits of a saved model (per text, or per word for a tagger), however `train.peft` trained it.

Loaded through transformers (torch); the serving path uses tasks.lib.inference.onnx_classifier
instead and never imports this.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.lib.inference.word_logits import first_subwords
from tasks.lib.training.parameter_efficient import load_trained


def torch_logits(model_dir: Path, texts: Sequence[str], batch_size: int, max_length: int) -> np.ndarray:
    """Logits of a saved Hugging Face classifier, batched, dynamic padding, no grad."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_trained(AutoModelForSequenceClassification, model_dir)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            out.append(model(**batch).logits.float().numpy())
    return np.concatenate(out)


def torch_word_logits(
    model_dir: Path, sentences: Sequence[list[str]], batch_size: int, max_length: int
) -> list[np.ndarray]:
    """Per sentence, the logits of a saved token classifier for each word (words x tags): those of the
    word's first subword, as it was trained; NaN rows for words past `max_length` subwords."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_trained(AutoModelForTokenClassification, model_dir)
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            words = [list(sentence) for sentence in sentences[start : start + batch_size]]
            batch = tokenizer(
                words,
                is_split_into_words=True,
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = model(**batch).logits.float().numpy()
            out += [first_subwords(logits[row], batch.word_ids(row), len(s)) for row, s in enumerate(words)]
    return out
