"""Token-classification data: sentences of words and their tags, from CoNLL column files and JSON Lines.

A sentence is one row of the raw schema: its words joined by single spaces as the text, its
tags joined the same way as the label (words hold no white space, so both split back exactly,
and the streaming stages, hashes and quarantine treat a sentence like any other text). The
row's line is the line of its first word.

CoNLL files hold a word per line in white-space separated columns (`data.word_field`,
`data.tag_field`), a blank line between sentences, and may hold `-DOCSTART-` lines between
documents. Tags are IOB2 (`B-` starts every entity) or, with `data.tag_scheme: iob1`, IOB1 (an
entity starts with `I-` unless it follows one of the same type), converted to IOB2 on read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks.lib.errors import DataError

DOCUMENT_START = "-DOCSTART-"
TOKENS_FIELD, TAGS_FIELD = "tokens", "tags"


@dataclass
class Sentence:
    line: int  # the line of its first word (JSON Lines: of its record)
    words: list[str]
    tags: list[str]

    def record(self) -> dict[str, str]:
        """The sentence as the raw schema's text and label (words and tags joined by single spaces)."""
        return {"text": " ".join(self.words), "label": " ".join(self.tags)}


def as_sentences(texts: Iterable[str]) -> list[list[str]]:
    """Rows' texts (or labels) as lists of words (or tags), split where the raw schema joined them."""
    return [text.split(" ") for text in texts]


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB2 tags of IOB1 ones: an `I-X` that does not follow an `X` starts an entity, so becomes `B-X`."""
    converted = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted


def iob2_to_iob1(tags: list[str]) -> list[str]:
    """IOB1 tags of IOB2 ones: `B-X` stays only where it follows an `X` (two entities side by side)."""
    converted, previous = [], "O"
    for tag in tags:
        converted.append("I-" + tag[2:] if tag.startswith("B-") and previous[2:] != tag[2:] else tag)
        previous = tag
    return converted


def conll_sentences(path: Path, lines: Iterable[str], word_field: int, tag_field: int) -> Iterator[Sentence]:
    """The sentences of a CoNLL column file, from its lines (each with or without its line ending).

    Raises:
        DataError: a line with too few columns for `word_field` and `tag_field`, naming the line.
    """
    words: list[str] = []
    tags: list[str] = []
    first = 0
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0] == DOCUMENT_START:  # a sentence (or document) ends here
            if words:
                yield Sentence(first, words, tags)
            words, tags = [], []
            continue
        word, tag = (field if field >= 0 else len(fields) + field for field in (word_field, tag_field))
        if word == tag or not (0 <= word < len(fields) and 0 <= tag < len(fields)):
            raise DataError(
                path,
                f"{len(fields)} white-space separated columns: the word (data.word_field {word_field}) and its "
                f"tag (data.tag_field {tag_field}) need two different columns",
                line=number,
            )
        if not words:
            first = number
        words.append(fields[word])
        tags.append(fields[tag])
    if words:
        yield Sentence(first, words, tags)


def jsonl_sentence(path: Path, record: dict[str, object], number: int) -> Sentence:
    """A JSON Lines record `{"tokens": [...], "tags": [...]}` as a sentence.

    The lists may differ in length (validation flags it); a token must be non-empty text
    without white space, a tag text.

    Raises:
        DataError: a missing or ill-typed field, an empty token or one with white space, naming
            the line and field.
    """
    values = {}
    for field in (TOKENS_FIELD, TAGS_FIELD):
        value = record.get(field)
        if value is None:
            raise DataError(
                path, f"no {field!r} list in this record (found {sorted(record)})", line=number, field=field
            )
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise DataError(
                path, f"expected a list of strings, found {json.dumps(value)[:60]}", line=number, field=field
            )
        values[field] = value
    for position, token in enumerate(values[TOKENS_FIELD], start=1):
        if not token or len(token.split()) != 1 or token != token.strip():
            problem = "is empty" if not token.strip() else f"{token!r} holds white space; split it into tokens"
            raise DataError(path, f"token {position} {problem}", line=number, field=TOKENS_FIELD)
    return Sentence(number, values[TOKENS_FIELD], values[TAGS_FIELD])


def tag_list(types: list[str]) -> list[str]:
    """The IOB2 tags of entity `types` in a fixed order: O, then B-/I- of each type (a tagger's labels)."""
    return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in "BI")]


def tag_types(tags: list[str]) -> list[str]:
    """The entity types of a tagger's tags (`tag_list`'s inverse), in order."""
    return [tag[2:] for tag in tags if tag.startswith("B-")]


def tag_set(types: list[str]) -> set[str]:
    """The IOB2 tags of entity `types`: O, and B-/I- of each type."""
    return set(tag_list(types))


Span = tuple[str, int, int]  # (type, first word, last word)


def spans(tags: list[str]) -> list[Span]:
    """The entities of IOB2 `tags`, in order: `B-X` starts one, so does an `I-X` that does not
    continue an X; it ends before `O`, `B-` or a tag of another type (as seqeval and conlleval read
    tags: tests/unit/test_entity_metrics.py checks it against seqeval)."""
    found: list[Span] = []
    kind, start = "", -1
    for position, tag in enumerate([*tags, "O"]):
        prefix, current = (tag[:2], tag[2:]) if tag[:2] in ("B-", "I-") else ("O", "")
        if kind and (prefix != "I-" or current != kind):  # the open entity ends before this tag
            found.append((kind, start, position - 1))
            kind = ""
        if prefix == "B-" or (prefix == "I-" and not kind):
            kind, start = current, position
    return found


def entity_types(tags: list[str]) -> list[str]:
    """The type of each entity in `tags`, in order (`spans`)."""
    return [kind for kind, _, _ in spans(tags)]


def entity_signature(types: Iterable[str]) -> str:
    """A sentence's one label where monitoring needs one (reference profile, prediction log): the
    entity types it holds, sorted and joined by `+` (`LOC+PER`), or `(none)`."""
    return "+".join(sorted(set(types))) or "(none)"


def misaligned(text: str, label: str) -> str | None:
    """Why a sentence's tags do not pair with its words, or None."""
    words, tags = len(text.split(" ")) if text else 0, len(label.split(" ")) if label else 0
    return None if words == tags else f"{words} words, {tags} tags"


def unknown_tag(label: str, tags: set[str]) -> str | None:
    """The first tag not in `tags` (and how many there are), or None."""
    unknown = [(position, tag) for position, tag in enumerate(label.split(" ") if label else [], 1) if tag not in tags]
    if not unknown:
        return None
    position, tag = unknown[0]
    more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
    return f"tag {tag!r} at word {position}{more}"


def broken_iob(label: str) -> str | None:
    """Where an `I-X` does not continue an X (IOB2 starts every entity with B-), or None."""
    tags = label.split(" ") if label else []
    for kind, first, _ in spans(tags):
        if tags[first].startswith("I-"):
            previous = tags[first - 1] if first and tags[first - 1][:2] in ("B-", "I-") else "O"
            return f"{tags[first]} at word {first + 1} follows {previous}: the entity has no B-{kind}"
    return None


def repair_iob(label: str) -> str:
    """`label` with each `I-X` that does not continue an X made `B-X`."""
    return " ".join(iob1_to_iob2(label.split(" "))) if label else label
