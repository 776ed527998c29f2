import hashlib

import numpy as np
import pandas as pd
import pytest

from tasks.lib.config import SplitConfig
from tasks.lib.data.splitting import SplitError, split, unit_hash


def frame(n: int, with_split: str | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"t{i}" for i in range(n)],
            "label": ["a" if i % 4 else "b" for i in range(n)],
            "split": with_split,
            "row_id": [str(i) for i in range(n)],
        }
    )


def test_fractions_class_shares_seeded_and_disjoint(make_params):
    config = make_params({"split": {"val_fraction": 0.1, "test_fraction": 0.2}}).split
    parts = split(frame(4000), config)
    # Each text group draws its split: sizes within 4 standard deviations of the binomial.
    for name, share in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(len(parts[name]) - 4000 * share) < 4 * (4000 * share * (1 - share)) ** 0.5
    for part in parts.values():
        assert abs((part["label"] == "b").mean() - 0.25) < 0.05
    ids = [set(p["row_id"]) for p in parts.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    again = split(frame(4000), config)
    assert all(parts[k]["row_id"].tolist() == again[k]["row_id"].tolist() for k in parts)


def test_source_splits_are_kept_and_missing_val_is_carved(make_params):
    config = make_params().split
    source = pd.concat([frame(500, "train"), frame(100, "test").assign(row_id=lambda f: "t" + f.row_id)])
    parts = split(source, config)
    assert parts["test"]["row_id"].str.startswith("t").all() and len(parts["test"]) == 100
    assert len(parts["val"]) > 0 and len(parts["train"]) + len(parts["val"]) == 500


def test_max_train_rows_subsamples_train_only(make_params):
    config = make_params({"split": {"max_train_rows": 100}}).split
    parts = split(frame(1000), config)
    assert len(parts["train"]) == 100 and len(parts["test"]) > 100 and len(parts["val"]) > 50


def test_max_test_rows_caps_test_stably_and_leaves_the_rest_out_of_training(make_params):
    config = make_params({"split": {"max_test_rows": 100}}).split
    uncapped = split(frame(4000), make_params().split)
    before = split(frame(4000), config)
    assert len(before["test"]) == 100 and set(before["test"]["row_id"]) < set(uncapped["test"]["row_id"])
    assert abs((before["test"]["label"] == "b").mean() - 0.25) < 0.15  # a uniform sample of the test rows
    left_out = set(uncapped["test"]["row_id"]) - set(before["test"]["row_id"])
    assert not left_out & (set(before["train"]["row_id"]) | set(before["val"]["row_id"]))
    # More data: a test row kept now was kept before; none moves to training.
    after = split(pd.concat([frame(4000), frame(8000).iloc[4000:]], ignore_index=True), config)
    old = set(frame(4000)["row_id"])
    assert len(after["test"]) == 100 and set(after["test"]["row_id"]) & old <= set(before["test"]["row_id"])
    assert not left_out & (set(after["train"]["row_id"]) | set(after["val"]["row_id"]))


def test_texts_equal_after_normalisation_stay_in_one_split(make_params):
    # Duplicates that validation was told to keep (policy warn) must not leak into test.
    config = make_params().split
    rows = frame(400)
    repeats = rows.iloc[:100].assign(text=lambda f: f.text.str.upper() + "  ", row_id=lambda f: "r" + f.row_id)
    parts = split(pd.concat([rows, repeats], ignore_index=True), config)
    where = {text.strip().lower(): name for name, part in parts.items() for text in part["text"]}
    for name, part in parts.items():
        assert all(where[text.strip().lower()] == name for text in part["text"])


def test_appended_rows_never_move_existing_rows_between_splits(make_params):
    # Retraining on new data: what production trained on must not reach the test split, nor test rows training.
    config = make_params().split
    before = split(frame(1000), config)
    after = split(pd.concat([frame(1000), frame(3000).iloc[1000:]], ignore_index=True), config)
    was = {row: name for name, part in before.items() for row in part["row_id"]}
    now = {row: name for name, part in after.items() for row in part["row_id"]}
    assert all(now[row] == name for row, name in was.items())
    assert len(now) == 3000


def test_a_label_too_rare_for_a_split_is_named(make_params):
    config = make_params().split
    rows = frame(200).assign(label="a")
    rows.loc[0, "label"] = "rare"
    with pytest.raises(SplitError, match=r"no rows of labels \['rare'\]"):
        split(rows, config)


def test_the_split_hash_never_changes():
    # A text's split follows from this hash: a different value would move rows of existing
    # workspaces between splits (training rows into the test split the gate scores).
    assert list(unit_hash(pd.Series(["a fine film", ""]), "42:test")) == [0.05876574518591207, 0.8112633799162755]
    keys = [f"text {i} ü" for i in range(1000)]
    reference = [
        int.from_bytes(hashlib.blake2b(f"7:val\0{key}".encode(), digest_size=8).digest(), "big") / 2.0**64
        for key in keys
    ]
    assert list(unit_hash(np.array(keys, dtype=object), "7:val")) == reference


def test_an_unknown_source_split_is_an_error_not_a_lost_row():
    frame = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"], "split": ["train", "dev"]})
    with pytest.raises(SplitError, match=r"split values \['dev'\]"):
        split(frame, SplitConfig(val_fraction=0.1, test_fraction=0.1, seed=1, max_train_rows=None, max_test_rows=None))


def sentences(n: int, rare_every: int = 1) -> pd.DataFrame:
    """Sentences with a person each, a place in every other one, an event in every `rare_every`-th."""
    rows = []
    for i in range(n):
        words, tags = [f"Name{i}", "met"], ["B-PER", "O"]
        if i % 2:
            words, tags = [*words, "in", "Oslo"], [*tags, "O", "B-LOC"]
        if i % rare_every == 0:
            words, tags = [*words, "at", "Davos"], [*tags, "O", "B-MISC"]
        rows.append((" ".join(words), " ".join(tags)))
    texts, labels = zip(*rows, strict=True)
    return pd.DataFrame({"text": texts, "label": labels, "split": None, "row_id": [str(i) for i in range(n)]})


def test_sentences_are_carved_so_every_entity_type_reaches_every_split(make_params):
    config = make_params({"split": {"max_train_rows": 300}}).split
    parts = split(sentences(1000, rare_every=7), config, ["PER", "LOC", "MISC"])
    for name, part in parts.items():
        for kind in ("PER", "LOC", "MISC"):
            assert part["label"].str.contains(f"B-{kind}").any(), (name, kind)
    assert len(parts["train"]) == 300  # stratified by the first entity type: every sentence's is PER
    # An entity type in three sentences of a thousand cannot reach the 10% val split and the rest.
    with pytest.raises(SplitError, match=r"no sentences with entities of types \['MISC'\]"):
        split(sentences(1000, rare_every=400), make_params().split, ["PER", "LOC", "MISC"])
