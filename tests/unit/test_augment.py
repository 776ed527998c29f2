import random

import pandas as pd
import pytest

from tasks.augment import augment, negations
from tasks.augment.backtranslate import ApertiumTranslator
from tasks.augment.synonym import SynonymSwapper


@pytest.fixture(scope="module")
def swapper(tmp_path_factory):
    return SynonymSwapper(tmp_path_factory.mktemp("nltk"), replace_fraction=1.0, protected_words=["movie"])


def test_synonym_swap_changes_content_words_only(swapper):
    text = "The movie was not a wonderful experience, and the actors never smiled."
    variant = swapper.swap(text, random.Random(0))
    assert variant != text
    for kept in ("movie", "not", "never", "The", ",", "."):
        assert kept in variant
    assert negations(variant) == negations(text)


def test_synonym_swap_keeps_casing_and_is_deterministic(swapper):
    text = "Wonderful acting"
    first = swapper.swap(text, random.Random(3))
    assert first[0].isupper() and first == swapper.swap(text, random.Random(3))


def test_apertium_back_translation_round_trips():
    texts = ["the film was very good .", "I did not like the ending", "hello"]
    back = ApertiumTranslator(batch_size=2).back_translate(texts)
    assert len(back) == 3 and all(back)
    assert back[2].lower() == "hello"
    assert "film" in back[0] and back[0][0].islower()  # casing style of the source is kept


class Echo:
    """A translator that returns its input: every variant must be filtered as unchanged."""

    def back_translate(self, texts):
        return list(texts)


def test_augment_marks_origin_and_filters(make_params, swapper):
    config = make_params({"augment": {"synonym": {"ratio": 0.5}, "backtranslation": {"ratio": 0.5}}}).augment
    train = pd.DataFrame({"text": [f"a wonderful story number {i}" for i in range(20)], "label": "pos",
                          "split": "train", "row_id": [f"r{i}" for i in range(20)]})
    out, report = augment(train, config, swapper, Echo())
    assert (out["origin"] == "original").sum() == 20
    synonyms = out[out["origin"] == "synonym"]
    assert len(synonyms) == report["synonym"]["kept"] > 0
    assert (synonyms["row_id"] == synonyms["source_id"] + "#synonym").all()
    assert report["backtranslation"]["dropped"]["identical_to_source"] == 10
    assert (out["origin"] != "backtranslation").all()
    again, _ = augment(train, config, swapper, Echo())
    pd.testing.assert_frame_equal(out, again)
