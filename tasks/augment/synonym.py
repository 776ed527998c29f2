"""Synonym swap with WordNet: replace a share of content words, keep the rest."""

from __future__ import annotations

import functools
import random
import re
from pathlib import Path
from typing import Any

from tasks.augment import wordnet

# Never swapped: these carry the label ("not good") or the grammar.
NEGATIONS = frozenset("""no not never none nothing nobody nowhere neither nor n't cannot without
hardly barely scarcely""".split())
STOPWORDS = frozenset("""a an the and or but if then else of at by for with about against between into
through during before after above below to from up down in out on off over under again further once here
there when where why how all any both each few more most other some such only own same so than too very
can will just should now i me my myself we our ours you your he him his she her it its they them their
what which who whom this that these those am is are was were be been being have has had having do does
did doing would could might must shall may also as be 's 're 've 'd 'll""".split())
# Searched in this order: adjectives and adverbs carry sentiment and do not inflect.
POS_ORDER = ("a", "r", "n", "v")
WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")


class SynonymSwapper:
    """Replace about `replace_fraction` of eligible words in a text with WordNet synonyms.

    A word is eligible when it is not a stopword, negation or protected word and
    WordNet knows it in its base form for some part of speech; the synonym comes
    from the two most frequent senses of that part of speech, so a noun is
    replaced by a noun, and casing is kept.
    """

    def __init__(self, nltk_data: Path, replace_fraction: float, protected_words: list[str]):
        self.wordnet: Any = wordnet.load(nltk_data)
        self.replace_fraction = replace_fraction
        self.protected = NEGATIONS | STOPWORDS | {w.lower() for w in protected_words}

    @functools.lru_cache(maxsize=200_000)
    def synonyms(self, word: str) -> tuple[str, ...]:
        """Single-word synonyms of a lower-case word, most frequent senses first."""
        if word in self.protected or len(word) < 3:
            return ()
        for pos in POS_ORDER:
            if self.wordnet.morphy(word, pos) != word:
                continue  # an inflected form: a swap would lose the inflection
            found: list[str] = []
            for synset in self.wordnet.synsets(word, pos=pos)[:2]:
                for lemma in synset.lemma_names():
                    name = lemma.lower()
                    if name != word and name.isalpha() and name not in self.protected and name not in found:
                        found.append(name)
            if found:
                return tuple(found)
        return ()

    def swap(self, text: str, rng: random.Random) -> str:
        """One variant of `text`; returns `text` unchanged when nothing is eligible."""
        spans = [m for m in WORD.finditer(text) if self.synonyms(m.group().lower())]
        if not spans:
            return text
        count = max(1, round(self.replace_fraction * len(spans)))
        chosen = sorted(rng.sample(spans, min(count, len(spans))), key=lambda m: m.start())
        pieces, last = [], 0
        for match in chosen:
            original = match.group()
            replacement = rng.choice(self.synonyms(original.lower()))
            if original.isupper() and len(original) > 1:
                replacement = replacement.upper()
            elif original[0].isupper():
                replacement = replacement.capitalize()
            pieces += [text[last:match.start()], replacement]
            last = match.end()
        return "".join(pieces + [text[last:]])
