"""A token classifier's output per word, whatever runs it (PyTorch, ONNX Runtime, OpenVINO).

Training labels a word's first subword and ignores the others, so a word's logits are those of
its first subword. A word past the model's maximum length has none: it is predicted O (a row of
zeros with a 1 at O), the same in evaluation, export parity, the variants' measurement and
serving, so every one of them compares like with like.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

OUTSIDE = "O"


def first_subwords(token_logits: np.ndarray, word_ids: Sequence[int | None], words: int) -> np.ndarray:
    """(words x tags) logits of one sentence from its (subwords x tags) logits: each word's first
    subword; NaN rows for words the tokenizer cut off."""
    per_word = np.full((words, token_logits.shape[-1]), np.nan, dtype=np.float32)
    seen: set[int] = set()
    for position, word in enumerate(word_ids):
        if word is not None and word not in seen:
            per_word[word] = token_logits[position]
            seen.add(word)
    return per_word


def flatten(per_sentence: Sequence[np.ndarray], tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All sentences' word logits in one (words x tags) array, cut words set to predict O; and the
    mask of the cut words."""
    logits: np.ndarray = np.concatenate(per_sentence) if per_sentence else np.zeros((0, len(tags)), np.float32)
    cut: np.ndarray = np.isnan(logits).any(axis=1)
    logits[cut] = 0.0
    logits[cut, tags.index(OUTSIDE)] = 1.0
    return logits, cut


def sentence_tags(flat_logits: np.ndarray, lengths: Sequence[int], tags: list[str]) -> list[list[str]]:
    """The predicted tags of each sentence, from the words' logits of all sentences in order."""
    best = flat_logits.argmax(axis=1)
    bounds = np.cumsum([0, *lengths])
    return [[tags[i] for i in best[start:end]] for start, end in itertools.pairwise(bounds)]
