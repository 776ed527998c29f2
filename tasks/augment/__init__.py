"""Stage `augment`: synonym swap and back-translation of training rows.

Only the training split is augmented (val/test never see generated text).
Every new row keeps the id of the row it came from and names its method.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

import pandas as pd
from tqdm import tqdm

from tasks.augment.backtranslate import ApertiumTranslator, BackTranslator
from tasks.augment.synonym import NEGATIONS, SynonymSwapper
from tasks.config import AugmentConfig, Params
from tasks.io import ROW_ID, TEXT, read_table, write_json, write_table
from tasks.validate import normalise

ORIGIN, SOURCE_ID = "origin", "source_id"


def _sample(frame: pd.DataFrame, ratio: float, seed: int) -> pd.DataFrame:
    return frame.sample(n=round(ratio * len(frame)), random_state=seed) if ratio > 0 else frame.iloc[:0]


def _variants(rows: pd.DataFrame, texts: list[str], method: str) -> pd.DataFrame:
    return rows.assign(**{TEXT: texts, ROW_ID: rows[ROW_ID] + f"#{method}",
                          ORIGIN: method, SOURCE_ID: rows[ROW_ID]})


def negations(text: str) -> int:
    """How many negation words a text has (a variant that changes this may flip the label)."""
    return sum(word in NEGATIONS for word in re.findall(r"[a-z']+", text.lower().replace("n't", " n't")))


def _filter(original: pd.DataFrame, candidates: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop variants that equal their source or another row, or that gained or lost a negation."""
    source_text = candidates[SOURCE_ID].map(dict(zip(original[ROW_ID], original[TEXT])))
    keys = candidates[TEXT].map(normalise)
    unchanged = keys == source_text.map(normalise)
    duplicate = (keys.isin(set(original[TEXT].map(normalise))) | keys.duplicated()) & ~unchanged
    negation = (candidates[TEXT].map(negations) != source_text.map(negations)) & ~unchanged & ~duplicate
    kept = candidates[~unchanged & ~duplicate & ~negation]
    return kept, {"identical_to_source": int(unchanged.sum()), "duplicate_of_other_row": int(duplicate.sum()),
                  "negation_changed": int(negation.sum())}


def augment(train: pd.DataFrame, config: AugmentConfig, swapper: SynonymSwapper | None,
            translator: BackTranslator | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the training rows plus their augmented variants, and a report.

    Args:
        train: the training split.
        config: the `augment` section.
        swapper: the synonym engine (None when its ratio is 0).
        translator: the back-translation engine (None when its ratio is 0).
    """
    original = train.assign(**{ORIGIN: "original", SOURCE_ID: train[ROW_ID]})
    report: dict[str, Any] = {"original_rows": len(train)}
    variants = []
    jobs = [("synonym", config.synonym.ratio, swapper), ("backtranslation", config.backtranslation.ratio, translator)]
    for offset, (method, ratio, engine) in enumerate(jobs):
        rows = _sample(train, ratio, config.seed + offset)
        if rows.empty:
            continue
        if engine is None:
            raise ValueError(f"augment.{method}.ratio is {ratio} but no {method} engine was given")
        started = time.perf_counter()
        if isinstance(engine, SynonymSwapper):
            texts = [engine.swap(text, random.Random(f"{config.seed}:{row_id}"))
                     for text, row_id in tqdm(zip(rows[TEXT], rows[ROW_ID]), total=len(rows), desc=method)]
        else:
            texts = engine.back_translate(list(rows[TEXT]))
        seconds = time.perf_counter() - started
        kept, dropped = _filter(original, _variants(rows, texts, method))
        variants.append(kept)
        report[method] = {"attempted": len(rows), "kept": len(kept), "dropped": dropped,
                          "seconds": round(seconds, 3), "rows_per_s": round(len(rows) / max(seconds, 1e-9), 1)}
    combined = pd.concat([original, *variants], ignore_index=True)
    # A variant may collide with another method's variant of the same text.
    before = len(combined)
    combined = combined[~combined[TEXT].map(normalise).duplicated()].reset_index(drop=True)
    report["cross_method_duplicates"] = before - len(combined)
    report["total_rows"] = len(combined)
    return combined, report


def run(params: Params) -> None:
    """Stage entry point: write the augmented training set and its report."""
    config = params.augment
    swapper = (SynonymSwapper(params.path("cache") / "nltk_data", config.synonym.replace_fraction,
                              config.synonym.protected_words) if config.synonym.ratio > 0 else None)
    translator = (ApertiumTranslator(config.backtranslation.pivot, config.backtranslation.batch_size)
                  if config.backtranslation.ratio > 0 else None)
    frame, report = augment(read_table(params.path("train_split")), config, swapper, translator)
    write_table(params.path("augmented"), frame)
    write_json(params.path("metrics") / "augment.json", report)
    print(f"augment: {report}")
