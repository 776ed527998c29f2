"""Stage `augment`: synonym swap and back-translation of training rows, filtered (tasks/lib/augmentation)."""

from __future__ import annotations

import logging
from typing import Any

from tasks.lib.augmentation.backtranslate import BackTranslator, make_translator
from tasks.lib.augmentation.synonym import SynonymSwapper
from tasks.lib.augmentation.tagged import augment_sentences
from tasks.lib.augmentation.variants import augment
from tasks.lib.config import Params
from tasks.lib.io import read_table, write_json, write_table
from tasks.lib.stage_runner import run_as_script
from tasks.lib.training.models import resolve_base_model

log = logging.getLogger(__name__)


def engines(params: Params) -> tuple[SynonymSwapper | None, BackTranslator | None, Any]:
    """The engines the `augment` params turn on (a configured engine that is missing fails here).
    Token classification translates nothing (tasks.lib.augmentation.tagged says why)."""
    from tasks.lib.augmentation.similarity import SentenceEmbedder

    config = params.augment
    swapper = (
        SynonymSwapper(
            params.path("cache") / "nltk_data", config.synonym.replace_fraction, config.synonym.protected_words
        )
        if config.synonym.ratio > 0
        else None
    )
    bt = config.backtranslation
    if bt.engine == "marian":
        bt = bt.model_copy(
            update={
                "marian": bt.marian.model_copy(
                    update={
                        side: resolve_base_model(getattr(bt.marian, side), params.root)
                        for side in ("forward", "backward")
                    }
                )
            }
        )
    sentences = params.task == "token_classification"
    translating = not sentences and bt.ratio > 0
    translator = (
        make_translator(bt, config.seed, params.path("cache") / "augment" if config.cache else None)
        if translating
        else None
    )
    active = config.synonym.ratio > 0 or translating or (sentences and config.mentions.ratio > 0)
    embedder = (
        SentenceEmbedder(resolve_base_model(config.filters.similarity_model, params.root))
        if active and config.filters.min_similarity is not None
        else None
    )
    return swapper, translator, embedder


def run(params: Params) -> None:
    """Stage entry point: write the augmented training set and its report."""
    train = read_table(params.path("train_split"))
    if params.task == "token_classification":
        swapper, _, embedder = engines(params)
        frame, report = augment_sentences(train, params.augment, swapper, embedder)
    else:
        frame, report = augment(train, params.augment, *engines(params))
    write_table(params.path("augmented"), frame)
    write_json(params.path("metrics") / "augment.json", report)
    log.info(f"augment: {report}")


if __name__ == "__main__":
    run_as_script(run)
