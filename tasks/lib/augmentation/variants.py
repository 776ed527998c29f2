"""Variants of training rows: which rows, by which method, and the filters they must pass.

Only the training split is augmented (val/test never see generated text).
Every new row keeps the id of the row it came from and names its method.
Which rows get variants: a share of every class, or enough to balance the
classes (`augment.classes`). Variants that are unchanged, duplicated, gained
or lost a negation, changed length too much or drifted in meaning (sentence
embedding similarity) are dropped and counted. Back-translations are cached
by text and engine settings. Everything is seeded: the same inputs and params
give the same rows.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from tasks.lib.augmentation.backtranslate import (
    BackTranslator,
    CachedTranslator,
)
from tasks.lib.augmentation.synonym import NEGATIONS, SynonymSwapper
from tasks.lib.columns import LABEL, ORIGIN, ROW_ID, SOURCE_ID, TEXT
from tasks.lib.config import AugmentConfig, AugmentFilterConfig
from tasks.lib.data.text import normalise

METHODS = ("synonym", "backtranslation")


def negations(text: str) -> int:
    """How many negation words a text has (a variant that changes this may flip the label)."""
    return sum(word in NEGATIONS for word in re.findall(r"[a-z']+", text.lower().replace("n't", " n't")))


def plan(train: pd.DataFrame, config: AugmentConfig) -> dict[str, pd.DataFrame]:
    """The source rows of each method, chosen per class with a seeded draw."""
    ratios = {"synonym": config.synonym.ratio, "backtranslation": config.backtranslation.ratio}
    per_row = {"synonym": config.synonym.variants, "backtranslation": 1}
    counts = train[LABEL].value_counts()
    active = {m: r for m, r in ratios.items() if r > 0}
    chosen: dict[str, list[pd.DataFrame]] = {m: [] for m in active}
    for label, rows in train.groupby(LABEL, sort=True):
        for offset, (method, ratio) in enumerate(active.items()):
            if config.classes == "share":
                take = round(ratio * len(rows))
            else:  # balance: this class's deficit, shared by the methods in proportion to their ratios
                need = (counts.max() - counts[label]) * ratio / sum(active.values())
                take = min(len(rows), math.ceil(need / per_row[method]))
            chosen[method].append(rows.sample(n=take, random_state=config.seed + offset))
    return {m: pd.concat(parts).sort_index() for m, parts in chosen.items()}


def _variants(rows: pd.DataFrame, texts: list[str], method: str, index: list[int]) -> pd.DataFrame:
    suffix = [f"#{method}" if i == 0 else f"#{method}{i + 1}" for i in index]
    return rows.assign(
        **{
            TEXT: texts,
            ROW_ID: rows[ROW_ID] + pd.Series(suffix, index=rows.index),
            ORIGIN: method,
            SOURCE_ID: rows[ROW_ID],
        }
    )


def quality_filter(
    original: pd.DataFrame, candidates: pd.DataFrame, config: AugmentFilterConfig, embedder: Any
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop variants that fail a rule; return the kept rows and how many each rule dropped (first rule wins)."""
    source = candidates[SOURCE_ID].map(dict(zip(original[ROW_ID], original[TEXT], strict=True)))
    keys = candidates[TEXT].map(normalise)
    ratio = candidates[TEXT].str.len() / source.str.len().clip(lower=1)
    rules = {
        "identical_to_source": keys == source.map(normalise),
        "duplicate_of_other_row": keys.isin(set(original[TEXT].map(normalise))) | keys.duplicated(),
        "negation_changed": candidates[TEXT].map(negations) != source.map(negations),
        "length_ratio": (ratio < config.min_length_ratio) | (ratio > config.max_length_ratio),
    }
    dropped: dict[str, int] = {}
    alive = pd.Series(True, index=candidates.index)
    for name, flagged in rules.items():
        dropped[name] = int((flagged & alive).sum())
        alive &= ~flagged
    if config.min_similarity is not None:
        similar = pd.Series(True, index=candidates.index)
        if alive.any():
            scores = embedder.similarity(list(source[alive]), list(candidates[TEXT][alive]))
            similar[alive] = scores >= config.min_similarity
        dropped["low_similarity"] = int((~similar & alive).sum())
        alive &= similar
    return candidates[alive], dropped


def generate(
    method: str,
    rows: pd.DataFrame,
    config: AugmentConfig,
    swapper: SynonymSwapper | None,
    translator: BackTranslator | None,
) -> pd.DataFrame:
    """The raw variants of `rows` by one method (before filtering)."""
    if method == "synonym":
        if swapper is None:
            raise ValueError(f"augment.synonym.ratio is {config.synonym.ratio} but no synonym engine was given")
        keys = [f"{config.seed}:{row_id}" for row_id in rows[ROW_ID]]
        per_text = swapper.variants(list(rows[TEXT]), keys, config.synonym.variants)
        parts = [
            _variants(rows, [v[k] for v in per_text], method, [k] * len(rows)) for k in range(config.synonym.variants)
        ]
        return pd.concat(parts)
    if translator is None:
        raise ValueError(f"augment.backtranslation.ratio is {config.backtranslation.ratio} but no engine was given")
    return _variants(rows, translator.back_translate(list(rows[TEXT])), method, [0] * len(rows))


def augment(
    train: pd.DataFrame,
    config: AugmentConfig,
    swapper: SynonymSwapper | None,
    translator: BackTranslator | None,
    embedder: Any = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the training rows plus their kept variants, and a report.

    Args:
        train: the training split.
        config: the `augment` section.
        swapper: the synonym engine (None when its ratio is 0).
        translator: the back-translation engine (None when its ratio is 0).
        embedder: sentence embeddings for `filters.min_similarity` (None when it is null).
    """
    original = train.assign(**{ORIGIN: "original", SOURCE_ID: train[ROW_ID]})
    report: dict[str, Any] = {
        "original_rows": len(train),
        "classes": config.classes,
        "rows_per_class": train[LABEL].value_counts().sort_index().to_dict(),
    }
    kept_parts = []
    for method, rows in plan(train, config).items():
        if rows.empty:
            continue
        kept, report[method] = filtered_variants(
            original,
            rows,
            functools.partial(generate, method, rows, config, swapper, translator),
            config.filters,
            embedder,
        )
        kept_parts.append(kept)
        report[method]["kept_per_class"] = kept[LABEL].value_counts().sort_index().to_dict()
        if method == "backtranslation" and isinstance(translator, CachedTranslator):
            report[method]["cache_hit_rate"] = translator.hit_rate
    combined = with_variants(original, kept_parts, report)
    report["total_per_class"] = combined[LABEL].value_counts().sort_index().to_dict()
    return combined, report


def filtered_variants(
    original: pd.DataFrame,
    rows: pd.DataFrame,
    generate_variants: Callable[[], pd.DataFrame],
    filters: AugmentFilterConfig,
    embedder: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One method's variants of `rows`, generated (timed) and filtered: the kept rows and the method's report."""
    started = time.perf_counter()
    candidates = generate_variants()
    seconds = time.perf_counter() - started
    kept, dropped = quality_filter(original, candidates, filters, embedder)
    return kept, {
        "source_rows": len(rows),
        "variants": len(candidates),
        "kept": len(kept),
        "dropped": dropped,
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(rows) / max(seconds, 1e-9), 1),
    }


def with_variants(original: pd.DataFrame, kept_parts: list[pd.DataFrame], report: dict[str, Any]) -> pd.DataFrame:
    """The original rows and every method's kept variants, less the variants that collide with another
    method's variant of the same text (counted in `report`, with the total)."""
    combined = pd.concat([original, *kept_parts], ignore_index=True)
    before = len(combined)
    combined = combined[~combined[TEXT].map(normalise).duplicated()].reset_index(drop=True)
    report["cross_method_duplicates"] = before - len(combined)
    report["total_rows"] = len(combined)
    return combined
