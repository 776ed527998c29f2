"""Sentence embeddings for the similarity filter, through sentence-transformers.

`SentenceTransformer` reads the model folder's own pooling and maximum length
(modules.json, sentence_bert_config.json), so a model that pools by its CLS
token or takes 512 tokens is embedded the way it was trained; a plain
transformers folder without them gets mean pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class SentenceEmbedder:
    """Unit-length sentence vectors (MiniLM by default), on the GPU when there is one."""

    def __init__(self, model: str, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.model: Any = SentenceTransformer(model, local_files_only=True)
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def similarity(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each pair (left[i], right[i])."""
        return (self.embed(left) * self.embed(right)).sum(axis=1)
