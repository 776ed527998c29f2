"""Variants of tagged sentences (token classification) whose tags stay right.

- `synonym`: the texts' synonym swap (tasks.lib.augmentation.synonym) on the whole sentence, so
  the tagger sees the words in context, then undone on every word inside an entity. The swap
  replaces one word by one word and leaves the rest of the text as it was, so the sentence keeps
  its words' positions and its tags.
- `mention`: every entity replaced by another mention of the same type from the training
  sentences (`Peter Blackburn` -> `Anna Berg`), its tags rebuilt (`B-PER I-PER`).
- Back-translation is not used: a translation has other words, in another order, and nothing
  says which of them carry the entity tags.

Sources are a seeded share of the training sentences (`augment.synonym.ratio`; for `mention`,
`augment.mentions.ratio` of the sentences with an entity); the variants pass the same filters as
texts' (tasks.lib.augmentation.variants.quality_filter; `mention` all but the similarity
filter) and keep their source's id.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import pandas as pd

from tasks.lib.augmentation.synonym import SynonymSwapper
from tasks.lib.augmentation.variants import filtered_variants, with_variants
from tasks.lib.columns import LABEL, ORIGIN, ROW_ID, SOURCE_ID, TEXT
from tasks.lib.config import AugmentConfig
from tasks.lib.data.sentences import spans

METHODS = ("synonym", "mention")


def mention_pool(train: pd.DataFrame) -> dict[str, list[tuple[str, ...]]]:
    """The distinct mentions of each entity type in the training sentences, sorted."""
    pool: dict[str, set[tuple[str, ...]]] = {}
    for text, label in zip(train[TEXT], train[LABEL], strict=True):
        words = text.split(" ")
        for kind, first, last in spans(label.split(" ")):
            pool.setdefault(kind, set()).add(tuple(words[first : last + 1]))
    return {kind: sorted(found) for kind, found in pool.items()}


def replace_mentions(
    words: list[str], tags: list[str], pool: dict[str, list[tuple[str, ...]]], rng: random.Random
) -> tuple[list[str], list[str]]:
    """`words` with each entity replaced by another mention of its type (itself when it is the only one)."""
    new_words: list[str] = []
    new_tags: list[str] = []
    position = 0
    for kind, first, last in spans(tags):
        new_words += words[position:first]
        new_tags += tags[position:first]
        original = tuple(words[first : last + 1])
        others = [mention for mention in pool.get(kind, []) if mention != original]
        mention = rng.choice(others) if others else original
        new_words += mention
        new_tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(mention) - 1)
        position = last + 1
    return new_words + words[position:], new_tags + tags[position:]


def _entity_safe(original: str, variant: str, tags: list[str]) -> str:
    """`variant` with every word inside an entity put back (the original if the words do not pair)."""
    before, after = original.split(" "), variant.split(" ")
    if len(after) != len(before):
        return original
    return " ".join(word if tag == "O" else kept for word, kept, tag in zip(after, before, tags, strict=True))


def _sources(train: pd.DataFrame, ratio: float, seed: int, with_entities: bool) -> pd.DataFrame:
    """A seeded `ratio` of the sentences (of those with an entity, if `with_entities`)."""
    pool = train[train[LABEL].str.contains(r"(?:^| )[BI]-", regex=True)] if with_entities else train
    return pool.sample(n=round(ratio * len(pool)), random_state=seed).sort_index()


def _variants(rows: pd.DataFrame, texts: list[str], labels: list[str], method: str) -> pd.DataFrame:
    return rows.assign(
        **{TEXT: texts, LABEL: labels, ROW_ID: rows[ROW_ID] + f"#{method}", ORIGIN: method, SOURCE_ID: rows[ROW_ID]}
    )


def generate(
    method: str, rows: pd.DataFrame, train: pd.DataFrame, config: AugmentConfig, swapper: SynonymSwapper | None
) -> pd.DataFrame:
    """The raw variants of `rows` by one method (before filtering)."""
    texts, labels = list(rows[TEXT]), list(rows[LABEL])
    if method == "synonym":
        if swapper is None:
            raise ValueError(f"augment.synonym.ratio is {config.synonym.ratio} but no synonym engine was given")
        keys = [f"{config.seed}:{row_id}" for row_id in rows[ROW_ID]]
        swapped = [variants[0] for variants in swapper.variants(texts, keys, 1)]
        safe = [_entity_safe(t, v, label.split(" ")) for t, v, label in zip(texts, swapped, labels, strict=True)]
        return _variants(rows, safe, labels, method)
    pool = mention_pool(train)
    replaced = [
        replace_mentions(text.split(" "), label.split(" "), pool, random.Random(f"{config.seed}:{row_id}"))
        for text, label, row_id in zip(texts, labels, rows[ROW_ID], strict=True)
    ]
    return _variants(rows, [" ".join(w) for w, _ in replaced], [" ".join(t) for _, t in replaced], method)


def augment_sentences(
    train: pd.DataFrame, config: AugmentConfig, swapper: SynonymSwapper | None, embedder: Any = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The training sentences plus their kept variants, and a report (as `variants.augment` for texts)."""
    original = train.assign(**{ORIGIN: "original", SOURCE_ID: train[ROW_ID]})
    report: dict[str, Any] = {
        "original_rows": len(train),
        "backtranslation": "off for token classification: a translation does not keep the words the tags belong to",
    }
    sources = {
        "synonym": _sources(train, config.synonym.ratio, config.seed, with_entities=False),
        "mention": _sources(train, config.mentions.ratio, config.seed + 1, with_entities=True),
    }
    kept_parts = []
    for method, rows in sources.items():
        if rows.empty:
            continue
        # A new name moves a short sentence's embedding far while its words keep their roles: the
        # similarity filter is for the synonym swap's meaning drift only.
        filters = config.filters if method == "synonym" else config.filters.model_copy(update={"min_similarity": None})
        kept, report[method] = filtered_variants(
            original, rows, functools.partial(generate, method, rows, train, config, swapper), filters, embedder
        )
        kept_parts.append(kept)
    return with_variants(original, kept_parts, report), report
