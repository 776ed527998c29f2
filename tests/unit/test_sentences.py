"""Token-classification data read into the raw schema: CoNLL column files and JSON Lines."""

import json
from pathlib import Path

import pytest

from tasks.lib.data.readers import DataError, read_file, read_source
from tasks.lib.data.sentences import iob1_to_iob2
from tasks.lib.stage_runner import run_stage

REPO = Path(__file__).resolve().parents[2]
CONLL = REPO.parent / "shared" / "data" / "conll2003"
NER = {"task": "token_classification", "data": {"labels": ["PER", "ORG", "LOC", "MISC"]}}


def test_conll_2003_reads_as_its_published_counts(make_params):
    # ../shared/data/README.md: sentences / tokens / entities per split.
    params = make_params({**NER, "data": {**NER["data"], "source": str(CONLL)}})
    raw = read_source(params.data, params.root, params.task)
    words = raw["text"].str.split(" ").map(len)
    assert (words == raw["label"].str.split(" ").map(len)).all()
    by_split = raw.groupby("split")
    assert by_split.size().to_dict() == {"train": 14041, "val": 3250, "test": 3453}
    assert words.groupby(raw["split"]).sum().to_dict() == {"train": 203621, "val": 51362, "test": 46435}
    entities = raw["label"].str.count(r"(?:^| )B-").groupby(raw["split"]).sum()
    assert entities.to_dict() == {"train": 23499, "val": 5942, "test": 5648}
    first = raw[raw["row_id"] == "train.txt:1"].iloc[0]
    assert first["text"] == "EU rejects German call to boycott British lamb ."
    assert first["label"] == "B-ORG O B-MISC O O O B-MISC O O"


def test_conll_documents_sentences_and_columns(tmp_path, make_params):
    text = (
        "-DOCSTART- -X- -X- O\r\n\r\n"
        "Peter\tNNP\tB-NP\tB-PER\r\nBlackburn NNP I-NP I-PER\r\n\r\n\r\n"
        "-DOCSTART- -X- O O\n"
        "BRUSSELS NNP B-NP B-LOC\n1996-08-22 CD I-NP O"  # no final newline
    )
    (tmp_path / "news.conll").write_text(text, encoding="utf-8")
    params = make_params({**NER, "data": {**NER["data"], "source": "news.conll"}})
    raw = read_source(params.data, params.root, params.task)
    assert raw[["text", "label", "source_line"]].values.tolist() == [
        ["Peter Blackburn", "B-PER I-PER", 3],
        ["BRUSSELS 1996-08-22", "B-LOC O", 8],
    ]
    params = make_params({**NER, "data": {**NER["data"], "source": "news.conll", "tag_field": 2}})
    assert read_source(params.data, params.root, params.task)["label"].tolist() == ["B-NP I-NP", "B-NP I-NP"]


def test_a_conll_line_without_its_tag_column_names_the_line(tmp_path, make_params):
    (tmp_path / "train.txt").write_text("Nordbank NNP B-NP B-ORG\nsaid\n", encoding="utf-8")
    params = make_params({**NER, "data": {**NER["data"], "source": "train.txt", "tag_field": 3}})
    with pytest.raises(DataError, match=r"train\.txt:2: 1 white-space separated columns: .* need two different"):
        read_source(params.data, params.root, params.task)


def _iob1(tags: list[str]) -> list[str]:
    """IOB2 tags written as IOB1: B- only where an entity follows one of the same type."""
    written = []
    for position, tag in enumerate(tags):
        previous = tags[position - 1] if position else "O"
        if tag.startswith("B-") and previous[2:] != tag[2:]:
            tag = "I-" + tag[2:]
        written.append(tag)
    return written


def test_iob1_is_converted_to_iob2():
    assert iob1_to_iob2(["I-PER", "I-PER", "B-PER", "I-LOC", "O", "I-LOC", "I-ORG"]) == [
        "B-PER",
        "I-PER",
        "B-PER",
        "B-LOC",
        "O",
        "B-LOC",
        "B-ORG",
    ]


def test_an_iob1_file_reads_as_the_iob2_file_it_was_written_from(tmp_path, make_params):
    # CoNLL-2003's test split, written the way the original 2003 release tags it (IOB1).
    sentences, current = [], []
    for line in (CONLL / "test.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.split())
        elif current:
            sentences.append(current)
            current = []
    sentences.append(current)
    with (tmp_path / "test.txt").open("w", encoding="utf-8") as sink:
        for sentence in sentences:
            tags = _iob1([fields[-1] for fields in sentence])
            assert sum(tag.startswith("B-") for tag in tags) < 20  # mostly I- starts, as IOB1 has them
            sink.writelines(f"{' '.join(fields[:-1])} {tag}\n" for fields, tag in zip(sentence, tags, strict=True))
            sink.write("\n")
    params = make_params({**NER, "data": {**NER["data"], "source": str(CONLL / "test.txt")}})
    expected = read_source(params.data, params.root, params.task)
    params = make_params({**NER, "data": {**NER["data"], "source": "test.txt", "tag_scheme": "iob1"}})
    converted = read_source(params.data, params.root, params.task)
    assert converted["label"].tolist() == expected["label"].tolist()
    params = make_params({**NER, "data": {**NER["data"], "source": "test.txt"}})  # read as IOB2: unchanged
    assert read_source(params.data, params.root, params.task)["label"].tolist() != expected["label"].tolist()


def test_jsonl_sentences_and_their_errors(tmp_path, make_params):
    params = make_params(NER)
    good = tmp_path / "good.jsonl"
    records = [
        {"tokens": ["Nadim", "Ladki"], "tags": ["B-PER", "I-PER"]},
        {"tokens": ["Short"], "tags": ["O", "O"]},  # a length mismatch is validation's to judge
    ]
    good.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    raw = read_file(good, params.data, task="token_classification")
    assert raw[["text", "label", "source_line"]].values.tolist() == [
        ["Nadim Ladki", "B-PER I-PER", 1],
        ["Short", "O O", 2],
    ]
    bad = {
        '{"tokens": ["a"], "tag": ["O"]}': r"bad\.jsonl:2: field 'tags': no 'tags' list in this record",
        '{"tokens": "a b", "tags": ["O"]}': r"bad\.jsonl:2: field 'tokens': expected a list of strings",
        '{"tokens": ["a", 3], "tags": ["O"]}': r"bad\.jsonl:2: field 'tokens': expected a list of strings",
        '{"tokens": ["New York"], "tags": ["B-LOC"]}': r"field 'tokens': token 1 'New York' holds white space",
        '{"tokens": ["a", ""], "tags": ["O", "O"]}': r"bad\.jsonl:2: field 'tokens': token 2 is empty",
    }
    for line, message in bad.items():
        (tmp_path / "bad.jsonl").write_text(json.dumps(records[0]) + "\n" + line + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=message):
            read_file(tmp_path / "bad.jsonl", params.data, task="token_classification")


def test_formats_that_hold_no_tags_per_word_are_refused(tmp_path, make_params):
    (tmp_path / "a.csv").write_text("text,label\nhello,O\n", encoding="utf-8")
    params = make_params(NER)
    with pytest.raises(DataError, match=r"a\.csv: token classification reads CoNLL column files"):
        read_file(tmp_path / "a.csv", params.data, task="token_classification")
    (tmp_path / "b.conll").write_text("EU B-ORG\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.conll: a CoNLL file holds tags per word"):
        read_file(tmp_path / "b.conll", make_params().data)


def test_a_label_map_is_refused_with_tags(make_params):
    from tasks.lib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.label_map: with task token_classification, name the tags"):
        make_params({**NER, "data": {**NER["data"], "label_map": {"PERS": "PER"}}})


def test_the_demo_source_makes_tagged_sentences_that_pass_validation(tmp_path, make_params):
    import shutil

    from tasks.lib.data.demo_sentences import generate_sentences
    from tasks.lib.recipes import apply_recipe
    from tasks.stages import ingest, validate

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    apply_recipe(tmp_path, "demo-entities")
    for stage in (ingest, validate):
        assert run_stage(stage.run, tmp_path) == 0
    summary = json.loads((tmp_path / "metrics" / "validate.json").read_text())
    assert summary["rows_read"] == summary["rows_kept"] == 2400  # nothing flagged
    raw = read_source(
        make_params({**NER, "data": {**NER["data"], "source": "demo"}}).data, tmp_path, "token_classification"
    )
    pairs = {
        pair
        for text, label in zip(raw["text"], raw["label"], strict=True)
        for pair in zip(text.split(" "), label.split(" "), strict=True)
    }
    assert {("Jordan", "B-LOC"), ("Jordan", "I-PER")} <= pairs  # a name whose type the context decides
    assert generate_sentences(50, 13, ["PER"]).equals(generate_sentences(50, 13, ["PER"]))
    assert not generate_sentences(50, 13, ["PER"])["label"].str.contains("LOC").any()
    with pytest.raises(DataError, match=r"demo: the demo source tags .*data.labels also has \['PRODUCT'\]"):
        read_source(make_params({**NER, "data": {"labels": ["PER", "PRODUCT"]}}).data, tmp_path, "token_classification")
