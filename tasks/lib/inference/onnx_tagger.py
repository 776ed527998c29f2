"""Run an exported token classifier (ONNX Runtime or OpenVINO by the file's suffix): no torch on this path.

The folder is laid out like a classifier's (graph, `tokenizer.json`, `classifier.json` naming the
tags and `task: token_classification`). Sentences come as lists of words; the shipped tokenizer
splits each word into subwords on its own, as training's `is_split_into_words` did, and a word
takes the logits of its first subword (tasks/lib/inference/word_logits.py).

Raw text is first split into words the way CoNLL-2003's were (Penn Treebank conventions:
punctuation apart, `U.S.` and `1996-08-22` whole, `didn't` as `did` `n't`), by NLTK's
Treebank word tokenizer, which also gives each word's character span; an entity's offsets are
those of its first word's start and its last word's end, so `text[start:end]` is its mention.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.lib.data.sentences import spans
from tasks.lib.evaluation.metrics import entropy, softmax
from tasks.lib.inference.onnx_classifier import BatchEncoder, Engine, load_engine
from tasks.lib.inference.word_logits import first_subwords, flatten

# Where NLTK cannot align its tokens with the text (it rewrites some quotes), words are runs of
# letters and digits joined by inner dots, apostrophes or hyphens, and every other visible character.
_FALLBACK_WORD = re.compile(r"\w+(?:[.'\u2019-]\w+)*\.?|\S")


def word_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of the words of `text`, in order."""
    from nltk.tokenize import NLTKWordTokenizer

    try:
        found = list(NLTKWordTokenizer().span_tokenize(text))
    except ValueError:  # none in 20,000 random texts of quotes, dots and apostrophes; kept for safety
        return simple_word_spans(text)
    # Words never hold white space (the tokenizer is given words); NLTK's spans do not either.
    return [(start, end) for start, end in found if end > start]


def simple_word_spans(text: str) -> list[tuple[int, int]]:
    """`word_spans` by a regular expression, where NLTK cannot align its tokens with the text."""
    return [match.span() for match in _FALLBACK_WORD.finditer(text)]


def tagged_words(text: str, entities: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The words of raw `text` (`word_spans`) and their IOB2 tags, from entities given by character
    offsets (`start`, `end`, `type`; not overlapping): the way a served text's feedback becomes data.

    Raises:
        ValueError: an entity does not begin at a word's start and end at a word's end; names it.
    """
    located = word_spans(text)
    first_of = {start: i for i, (start, _) in enumerate(located)}
    last_of = {end: i for i, (_, end) in enumerate(located)}
    tags = ["O"] * len(located)
    for entity in sorted(entities, key=lambda e: int(e["start"])):
        start, end, kind = int(entity["start"]), int(entity["end"]), str(entity["type"])
        first, last = first_of.get(start), last_of.get(end)
        if first is None or last is None or last < first:
            raise ValueError(
                f"entity {kind} {start}-{end} ({text[start:end]!r}) does not begin and end at word boundaries "
                f"(words: {[text[a:b] for a, b in located][:40]})"
            )
        tags[first : last + 1] = [f"B-{kind}"] + [f"I-{kind}"] * (last - first)
    return [text[a:b] for a, b in located], tags


@dataclass(frozen=True)
class Entity:
    """An entity found in a text: its type, its character span, its mention and its score (the mean
    probability of its words' predicted tags)."""

    start: int
    end: int
    type: str
    score: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "type": self.type, "score": self.score, "text": self.text}


def certainty(probabilities: np.ndarray) -> tuple[float, float]:
    """A sentence's mean word confidence (the probability of each word's predicted tag) and mean word
    entropy (nats), from its words' tag probabilities; (1.0, 0.0) for a sentence without words."""
    if not len(probabilities):
        return 1.0, 0.0
    return round(float(probabilities.max(axis=1).mean()), 6), round(float(entropy(probabilities).mean()), 6)


@dataclass(frozen=True)
class Tagged:
    """A tagger's answer for one raw text: its entities, and how sure it was of its words' tags
    (what monitoring compares with the reference profile)."""

    entities: list[Entity]
    confidence: float
    entropy: float


class Tagger:
    """Batched token classification with a model folder's tokenizer and tags, and an engine that runs
    its graph (or, to measure against, the PyTorch model)."""

    def __init__(self, folder: Path, engine: Engine):
        self.folder, self.engine = folder, engine
        self.encoder = BatchEncoder(folder, engine.inputs)
        self.info = self.encoder.info

    def word_logits(self, sentences: Sequence[list[str]], batch_size: int = 32, cut: bool = False) -> list[np.ndarray]:
        """Per sentence, its words' logits (words x tags; NaN rows for words past the maximum length)."""
        encodings = self.encoder.encode(list(sentences))
        out: list[np.ndarray] = [np.zeros((0, len(self.info.labels)), np.float32)] * len(sentences)
        for rows, feed in self.encoder.feeds(encodings, batch_size, cut):
            logits = self.engine.forward(feed)
            for position, row in enumerate(rows):
                out[row] = first_subwords(logits[position], encodings[row].word_ids, len(sentences[row]))
        return out

    def logits(self, sentences: Sequence[list[str]], batch_size: int = 32, cut: bool = False) -> np.ndarray:
        """All sentences' word logits in one (words x tags) array, in order; cut words predict O."""
        return flatten(self.word_logits(sentences, batch_size, cut), self.info.labels)[0]

    def tag(self, texts: Sequence[str], batch_size: int = 32, cut: bool = False) -> list[Tagged]:
        """The entities of each raw text, with character offsets into it (`word_spans`), and the
        certainty of its words' tags."""
        tags = self.info.labels
        located = [word_spans(text) for text in texts]
        sentences = [[text[start:end] for start, end in found] for text, found in zip(texts, located, strict=True)]
        out = []
        for text, found, logits in zip(texts, located, self.word_logits(sentences, batch_size, cut), strict=True):
            probabilities = softmax(flatten([logits], tags)[0])
            best = probabilities.argmax(axis=1)
            scores = probabilities[np.arange(len(best)), best]
            entities = []
            for kind, first, last in spans([tags[i] for i in best]):
                start, end = found[first][0], found[last][1]
                score = round(float(scores[first : last + 1].mean()), 6)
                entities.append(Entity(start, end, kind, score, text[start:end]))
            out.append(Tagged(entities, *certainty(probabilities)))
        return out


def onnx_tagger(folder: Path, model_file: str, threads: int | None = None) -> Tagger:
    """The tagger of a model folder's graph `model_file`, in the runtime its suffix names."""
    return Tagger(folder, load_engine(folder / model_file, threads))
