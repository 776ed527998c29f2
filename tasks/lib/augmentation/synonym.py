"""Synonym swap with WordNet: replace a share of content words by synonyms of the same part of speech."""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.lib.augmentation import wordnet
from tasks.lib.augmentation.errors import EngineError
from tasks.lib.augmentation.pos import ApertiumTagger, Word

_SYNTACTIC_MARKER = re.compile(r"\([^()]*\)$")

# Never swapped: these carry the label ("not good") or the grammar.
NEGATIONS = frozenset(
    [
        "no",
        "not",
        "never",
        "none",
        "nothing",
        "nobody",
        "nowhere",
        "neither",
        "nor",
        "n't",
        "cannot",
        "without",
        "hardly",
        "barely",
        "scarcely",
    ]
)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "at",
        "by",
        "for",
        "with",
        "about",
        "against",
        "between",
        "into",
        "through",
        "during",
        "before",
        "after",
        "above",
        "below",
        "to",
        "from",
        "up",
        "down",
        "in",
        "out",
        "on",
        "off",
        "over",
        "under",
        "again",
        "further",
        "once",
        "here",
        "there",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "only",
        "own",
        "same",
        "so",
        "than",
        "too",
        "very",
        "can",
        "will",
        "just",
        "should",
        "now",
        "i",
        "me",
        "my",
        "myself",
        "we",
        "our",
        "ours",
        "you",
        "your",
        "he",
        "him",
        "his",
        "she",
        "her",
        "it",
        "its",
        "they",
        "them",
        "their",
        "what",
        "which",
        "who",
        "whom",
        "this",
        "that",
        "these",
        "those",
        "am",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "having",
        "do",
        "does",
        "did",
        "doing",
        "would",
        "could",
        "might",
        "must",
        "shall",
        "may",
        "also",
        "as",
        "be",
        "'s",
        "'re",
        "'ve",
        "'d",
        "'ll",
    ]
)


class SynonymSwapper:
    """Variants of texts with about `replace_fraction` of their eligible words replaced.

    A word is eligible when the tagger gives it a WordNet part of speech in its
    sentence, it is in its base form (a swap would lose an inflection), it is
    not a stopword, negation or protected word, and WordNet has a one-word
    synonym for it in that part of speech (from its two most frequent senses).
    A verb is only replaced by a verb, a noun by a noun; casing is kept and
    everything between the replaced words (punctuation, spacing) is untouched.
    """

    def __init__(
        self,
        nltk_data: Path,
        replace_fraction: float,
        protected_words: Sequence[str],
        tagger: ApertiumTagger | None = None,
    ):
        self.wordnet: Any = wordnet.load(nltk_data)
        self.tagger = tagger or ApertiumTagger()
        self.replace_fraction = replace_fraction
        self.protected = NEGATIONS | STOPWORDS | {w.lower() for w in protected_words}

    @functools.lru_cache(maxsize=200_000)  # noqa: B019 - one swapper per stage run
    def synonyms(self, word: str, pos: str) -> tuple[str, ...]:
        """One-word synonyms of a lower-case word in a WordNet part of speech, most frequent senses first."""
        if word in self.protected or len(word) < 3:
            return ()
        found: list[str] = []
        # The index lists a base form's senses most frequent first; reading only
        # the first two (not `synsets()`, which lemmatises and parses every sense)
        # is what makes a cold swap fast.
        offsets = self.wordnet._lemma_pos_offset_map.get(word, {}).get(pos, [])[:2]
        for offset in offsets:
            for lemma in self._lemma_names(pos, offset):
                name = lemma.lower()
                if name != word and name.isalpha() and name not in self.protected and name not in found:
                    found.append(name)
        return tuple(found)

    def _lemma_names(self, pos: str, offset: int) -> list[str]:
        """The lemma names of the synset at `offset` of WordNet's data file for `pos`.

        Read from the synset's line directly (`offset lexfile pos count word lex_id ...`, count in
        hex; a name may end in a syntactic marker such as `(a)`): NLTK's `synset_from_pos_and_offset`
        also parses the gloss and every pointer, which was more than half of a cold swap's time.
        """
        data = self.wordnet._data_file(pos)
        data.seek(offset)
        fields = data.readline().split()
        if fields[:1] != [f"{offset:08d}"]:
            raise EngineError(f"WordNet data.{pos}: no synset at offset {offset}")
        return [_SYNTACTIC_MARKER.sub("", name) for name in fields[4 : 4 + 2 * int(fields[3], 16) : 2]]

    def _candidates(self, text: str, words: list[Word]) -> list[tuple[Word, tuple[str, ...]]]:
        found = []
        for word in words:
            surface = text[word.start : word.end]
            if word.pos is None or surface.lower() != word.lemma.lower() or not surface.isalpha():
                continue
            options = self.synonyms(surface.lower(), word.pos)
            if options:
                found.append((word, options))
        return found

    def _swap(self, text: str, candidates: list[tuple[Word, tuple[str, ...]]], rng: random.Random) -> str:
        count = max(1, round(self.replace_fraction * len(candidates)))
        chosen = sorted(rng.sample(candidates, min(count, len(candidates))), key=lambda c: c[0].start)
        pieces, last = [], 0
        for word, options in chosen:
            original = text[word.start : word.end]
            replacement = rng.choice(options)
            if original.isupper() and len(original) > 1:
                replacement = replacement.upper()
            elif original[0].isupper():
                replacement = replacement.capitalize()
            pieces += [text[last : word.start], replacement]
            last = word.end
        return "".join([*pieces, text[last:]])

    def variants(self, texts: Sequence[str], keys: Sequence[str], count: int) -> list[list[str]]:
        """`count` variants per text (the text itself where nothing is eligible).

        Args:
            texts: the texts, tagged together in one batch.
            keys: a stable key per text (its row id): variant k of a text is
                drawn from a generator seeded with (key, k), so it does not
                depend on the other rows.
            count: variants per text.
        """
        results = []
        for text, key, words in zip(texts, keys, self.tagger.tag(texts), strict=True):
            candidates = self._candidates(text, words)
            results.append(
                [
                    self._swap(text, candidates, random.Random(f"{key}:{k}")) if candidates else text
                    for k in range(count)
                ]
            )
        return results
