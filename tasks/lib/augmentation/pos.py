"""Part-of-speech tags from Apertium's English tagger (Debian `apertium-eng-spa`), offline.

The eng-spa pair ships an English morphological analyser and an HMM tagger;
the first two steps of its translation pipeline (`lt-proc`, `apertium-tagger
-g -p`) give each word its lemma and part of speech in context. One process
pair tags a whole batch: texts are separated by NUL (`-z`, null-flush mode).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.lib.augmentation.errors import EngineError

APERTIUM_DATA = Path("/usr/share/apertium")
# Apertium tag -> WordNet part of speech (n, v, a, r); other tags are not swapped.
WORDNET_POS = {"n": "n", "vblex": "v", "adj": "a", "adv": "r"}
_UNIT = re.compile(r"\^((?:\\.|[^/$\\])*)/((?:\\.|[^<$\\])*)((?:<[^>]*>)*)\$")
_RESERVED = re.compile(r"([\^$/<>@*\[\]{}\\#])")


@dataclass(frozen=True)
class Word:
    """One tagged word: where it is in the text, its lemma and WordNet part of speech (or None)."""

    start: int
    end: int
    lemma: str
    pos: str | None


class ApertiumTagger:
    """English POS tagging with the eng-spa pair's analyser and tagger."""

    def __init__(self, pair: str = "eng-spa", timeout_s: float = 300.0):
        folder = APERTIUM_DATA / f"apertium-{pair}"
        self.analyser, self.model = folder / f"{pair}.automorf.bin", folder / f"{pair}.prob"
        missing = [str(p) for p in (self.analyser, self.model) if not p.exists()]
        if shutil.which("lt-proc") is None or shutil.which("apertium-tagger") is None or missing:
            raise EngineError(
                f"the English part-of-speech tagger needs apertium and apertium-{pair} "
                f"(missing: {missing or 'lt-proc/apertium-tagger'}): "
                "`apt-get install apertium apertium-eng-spa` (make install does this)"
            )
        self.timeout_s = timeout_s

    def _run(self, command: list[str], data: bytes) -> bytes:
        try:
            done = subprocess.run(command, input=data, capture_output=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"{command[0]} timed out after {self.timeout_s}s") from exc
        if done.returncode != 0:
            raise EngineError(f"{command[0]} failed ({done.returncode}): {done.stderr.decode()[:500]}")
        return done.stdout

    def tag(self, texts: Sequence[str]) -> list[list[Word]]:
        """The tagged words of each text, in order, with their character spans."""
        # Apertium's stream format reserves these characters; NUL separates texts.
        stream = "".join(_RESERVED.sub(r"\\\1", t.replace("\0", " ")) + "\0" for t in texts).encode()
        analysed = self._run(["lt-proc", "-z", str(self.analyser)], stream)
        tagged = self._run(["apertium-tagger", "-z", "-g", "-p", str(self.model)], analysed).decode()
        # Every text ends in NUL, so one empty piece follows the last text.
        chunks = tagged.split("\0")
        if len(chunks) < len(texts) or any(piece.strip() for piece in chunks[len(texts) :]):
            raise EngineError(f"apertium-tagger returned {len(chunks)} pieces for {len(texts)} texts")
        return [_align(text, chunk) for text, chunk in zip(texts, chunks[: len(texts)], strict=True)]


_ESCAPED = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _ESCAPED.sub(r"\1", value) if "\\" in value else value


def _align(text: str, stream: str) -> list[Word]:
    """Find each tagged unit's surface form in the text, left to right."""
    words, cursor = [], 0
    for match in _UNIT.finditer(stream):
        surface, lemma, tags = _unescape(match.group(1)), _unescape(match.group(2)), match.group(3)
        at = text.find(surface, cursor)
        if at < 0 or not surface.strip():
            continue
        first_tag = tags[1 : tags.find(">")] if tags else ""
        words.append(Word(at, at + len(surface), lemma, WORDNET_POS.get(first_tag)))
        cursor = at + len(surface)
    return words
