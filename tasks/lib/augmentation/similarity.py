"""Sentence embeddings (mean-pooled encoder states) for the similarity filter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SentenceEmbedder:
    """Unit-length sentence vectors from a transformers encoder (MiniLM by default)."""

    def __init__(self, model: str, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        vectors = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            index = order[start:start + self.batch_size]
            inputs = self.tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=256,
                                    return_tensors="pt").to(self.device)
            with torch.inference_mode():
                states = self.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
            vectors[index] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return vectors

    def similarity(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each pair (left[i], right[i])."""
        return (self.embed(left) * self.embed(right)).sum(axis=1)
