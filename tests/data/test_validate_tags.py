"""Validation of token-classification data: tag rules, IOB repair, entity shares and drift."""

import json

import pandas as pd
import pytest

from tasks.lib.data.readers import read_source
from tasks.stages import ingest, validate
from tests.data.corpus import NER, SENTENCES, conll_bytes, first_lines


@pytest.fixture
def ner_params(tmp_path, make_params):
    def build(sentences, **overrides):
        (tmp_path / "ner.conll").write_bytes(conll_bytes(sentences))
        rules = {"label_drift": "fail", "min_class_share": "fail", **overrides.pop("rules", {})}
        return make_params(
            {
                "task": "token_classification",
                "data": {**NER["data"], "source": "ner.conll"},
                "validate": {"min_rows": 50, "rules": rules, **overrides},
            }
        )

    return build


def test_a_broken_iob_tag_is_repaired_and_the_row_kept(ner_params):
    broken = [("In", "O"), ("Oslo", "I-LOC"), ("Tom", "B-PER"), ("Hale", "I-ORG")]
    params = ner_params([*SENTENCES, broken])
    ingest.run(params)
    validate.run(params)
    validated = pd.read_parquet(params.path("validated"))
    assert len(validated) == len(SENTENCES) + 1
    assert validated["label"].iloc[-1] == "O B-LOC B-PER B-ORG"
    (record,) = [json.loads(line) for line in params.path("quarantine").read_text().splitlines()]
    assert record["kept"] and record["line"] == first_lines([*SENTENCES, broken])[-1]
    assert record["reasons"] == ["tags_iob: I-LOC at word 2 follows O: the entity has no B-LOC; repaired"]


def test_quarantine_and_fail_policies_for_broken_iob(ner_params):
    broken = [("In", "O"), ("Oslo", "I-LOC")]
    params = ner_params([*SENTENCES, broken], rules={"tags_iob": "quarantine"})
    ingest.run(params)
    validate.run(params)
    assert len(pd.read_parquet(params.path("validated"))) == len(SENTENCES)
    params = ner_params([*SENTENCES, broken], rules={"tags_iob": "fail"})
    ingest.run(params)
    with pytest.raises(validate.ValidationFailed, match=r"tags_iob"):
        validate.run(params)


def test_entity_shares_count_entities_not_sentences(ner_params):
    # Every sentence holds one entity of each type: 25% each, however many sentences.
    params = ner_params(SENTENCES)
    ingest.run(params)
    validate.run(params)
    summary = json.loads((params.path("metrics") / "validate.json").read_text())
    assert summary["rules"]["min_class_share"]["value"] == pytest.approx(0.25)
    assert summary["rules"]["max_imbalance_ratio"]["value"] == pytest.approx(1.0)
    # Against that accepted data, sentences that lost their MISC entity drift in entity shares.
    no_misc = [[(w, "O" if t.endswith("MISC") else t) for w, t in s] for s in SENTENCES]
    params = ner_params(SENTENCES[:100] + no_misc[100:], rules={"min_class_share": "warn"})
    ingest.run(params)
    with pytest.raises(validate.ValidationFailed, match=r"label_drift"):
        validate.run(params)
    raw = read_source(params.data, params.root, params.task)
    assert raw["label"].str.contains("MISC").sum() == 100
