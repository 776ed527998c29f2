"""The Great Expectations suite against good data and against broken rows."""

import json

import pandas as pd
import pytest

from tasks.ingest import ingest
from tasks.io import write_table
from tasks.validate import ValidationFailed, check, run


def raw_frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"text": [t for t, _ in rows], "label": [label for _, label in rows], "split": None,
                         "row_id": [f"f.csv:{i + 2}" for i in range(len(rows))], "source_file": "f.csv",
                         "source_line": [i + 2 for i in range(len(rows))]})


GOOD = [(f"review number {i} was {'fine' if i % 2 else 'poor'}", "pos" if i % 2 else "neg") for i in range(60)]


@pytest.fixture
def params(make_params):
    return make_params({"data": {"labels": ["neg", "pos"]}, "validate": {"min_rows": 50, "max_chars": 60}})


def test_clean_data_passes_with_nothing_flagged(params):
    outcome = check(raw_frame(GOOD), params.data, params.validate_)
    assert outcome.passed
    assert outcome.counts == {"text_present": 0, "text_length": 0, "label_in_set": 0, "duplicate_text": 0}
    assert len(outcome.kept) == 60


@pytest.mark.parametrize("bad_row, rule", [
    (("   ", "pos"), "text_present"),
    (("x" * 61, "neg"), "text_length"),
    (("a fine review", "positive"), "label_in_set"),
])
def test_each_broken_row_is_caught_by_its_rule(params, bad_row, rule):
    outcome = check(raw_frame(GOOD + [bad_row]), params.data, params.validate_)
    assert not outcome.passed
    assert outcome.failed_rules == {rule: 1} or rule in outcome.failed_rules
    assert any(reason.startswith(rule) for reason in outcome.reasons["f.csv:62"])


def test_duplicates_are_quarantined_keeping_the_first_copy(params):
    rows = GOOD + [("Review number 3 was  FINE", "pos")]
    outcome = check(raw_frame(rows), params.data, params.validate_)
    assert outcome.passed  # duplicate_text policy is quarantine
    assert outcome.counts["duplicate_text"] == 1
    assert list(outcome.reasons) == ["f.csv:62"]
    assert len(outcome.kept) == 60


def test_too_few_rows_left_fails_the_dataset_rule(make_params):
    params = make_params({"data": {"labels": ["neg", "pos"]}, "validate": {"min_rows": 100}})
    outcome = check(raw_frame(GOOD), params.data, params.validate_)
    assert outcome.dataset_errors and "min_rows" in outcome.dataset_errors[0]


def test_failed_stage_writes_quarantine_and_keeps_last_good_data(tmp_path, params):
    write_table(params.path("raw"), raw_frame(GOOD))
    run(params)
    good = params.path("validated").read_bytes()
    write_table(params.path("raw"), raw_frame(GOOD + [("", "pos"), ("ok text", "maybe")]))
    with pytest.raises(ValidationFailed) as failure:
        run(params)
    message = str(failure.value)
    assert "text_present: 1 rows (stops the run)" in message and "label_in_set: 1 rows" in message
    assert "f.csv:63" in message  # the person can find the row
    assert params.path("validated").read_bytes() == good
    quarantined = [json.loads(line) for line in params.path("quarantine").read_text().splitlines()]
    assert {(q["line"], tuple(r.split(":")[0] for r in q["reasons"])) for q in quarantined} == {
        (62, ("text_present", "text_length")), (63, ("label_in_set",))}
    summary = json.loads((params.path("metrics") / "validate.json").read_text())
    assert summary["passed"] is False and summary["rules"]["label_in_set"]["rows"] == 1


def test_sst2_train_passes_with_duplicates_quarantined(make_params):
    from tests.conftest import SST2

    params = make_params({"data": {"source": str(SST2 / "train.tsv"), "labels": [0, 1]}})
    raw = ingest(params.data, params.root)
    outcome = check(raw, params.data, params.validate_)
    assert outcome.passed
    assert {k: v for k, v in outcome.counts.items() if v} == {"duplicate_text": outcome.counts["duplicate_text"]}
    assert 300 < outcome.counts["duplicate_text"] < 500
