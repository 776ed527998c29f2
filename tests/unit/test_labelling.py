"""What a pull makes of Label Studio's annotations, without a server (tests/integration/test_labelling.py
has the real one): which tasks are used, which are reported and why, in the project's tag scheme."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.lib.config import LabellingConfig, load_params
from tasks.lib.data.sentences import iob2_to_iob1
from tasks.lib.errors import ConfigError
from tasks.lib.labelling.label_studio import Connection, connection
from tasks.lib.labelling.project_config import choice_result, label_config, span_result
from tasks.lib.labelling.sync import judge
from tests.support.repo import REPO


def task(text: str, *annotations: dict[str, Any], predicted: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    numbered = [{"id": i, "updated_at": "t", **a} for i, a in enumerate(annotations, start=1)]
    return {"id": 7, "data": {"text": text, "request_id": "r"}, "annotations": numbered,
            "predictions": [{"result": predicted}] if predicted is not None else []}  # fmt: skip


def test_a_classifiers_answers_are_used_once_agreed_and_reported_otherwise(make_params):
    params = make_params()
    accepted = task("a warm film", {"result": choice_result("positive")}, predicted=choice_result("positive"))
    outcome, row = judge(params, accepted)
    expected = {"text": "a warm film", "label": "positive", "label_studio_task": 7, "request_id": "r"}
    assert (outcome.outcome, outcome.edited, row) == ("used", False, expected)
    corrected = task("a warm film", {"result": choice_result("negative")}, predicted=choice_result("positive"))
    assert judge(params, corrected)[0].edited is True
    agreeing = task("x", {"result": choice_result("negative")}, {"result": choice_result("negative")})
    assert judge(params, agreeing)[0].outcome == "used"
    cases = {
        "skipped": task("x", {"result": [], "was_cancelled": True}),
        "conflicting": task("x", {"result": choice_result("negative")}, {"result": choice_result("positive")}),
        "unknown_label": task("x", {"result": choice_result("neutral")}),
        "unreadable": task("x", {"result": []}),
    }
    for reported, case in cases.items():
        outcome, row = judge(params, case)
        assert (outcome.outcome, row) == (reported, None), outcome
    # A skip beside an answer: the answer counts.
    assert judge(params, task("x", {"result": [], "was_cancelled": True}, {"result": choice_result("positive")}))[1]


def test_a_taggers_spans_become_words_and_tags_in_the_projects_scheme(make_params):
    params = make_params({"task": "token_classification", "data": {"labels": ["PER", "LOC"], "label_map": {}},
                          "gate": {"metrics": {"f1": {"min": 0.5}}, "slices": {}}})  # fmt: skip
    text = "Anna Berg met Tom in Oslo ."
    spans = [{"start": 0, "end": 9, "type": "PER"}, {"start": 14, "end": 17, "type": "PER"}]
    outcome, row = judge(params, task(text, {"result": span_result(text, spans)}, predicted=[]))
    assert outcome.outcome == "used" and outcome.edited
    assert row is not None and row["tags"] == ["B-PER", "I-PER", "O", "B-PER", "O", "O", "O"]
    assert iob2_to_iob1(["B-PER", "I-PER", "B-PER", "O", "B-LOC"]) == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    overlapping = span_result(text, [{"start": 0, "end": 9, "type": "PER"}, {"start": 5, "end": 9, "type": "LOC"}])
    assert judge(params, task(text, {"result": overlapping}))[0].detail.endswith("overlap")
    assert '<Label value="PER"/>' in label_config("token_classification", ["PER", "LOC"])


def test_the_url_and_token_come_from_the_environment_and_are_never_printed(monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(
        ConfigError,
        match=r"no URL \(LABEL_STUDIO_URL in the .*labelling\.url_block\) and no API token \(LABEL_STUDIO_API_KEY",
    ):
        connection(LabellingConfig())
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:8080/")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "s3cret-token")
    found = connection(LabellingConfig())
    assert found == Connection("http://127.0.0.1:8080", "s3cret-token") and "s3cret" not in repr(found)


def test_labelling_defaults_in_code_are_params_yamls_so_an_older_params_file_loads(tmp_path: Path):
    params = load_params(REPO)
    assert LabellingConfig() == params.labelling
    older = yaml.safe_load((REPO / "params.yaml").read_text())
    del older["labelling"], older["paths"]["labelling"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(older))
    loaded = load_params(tmp_path)
    assert loaded.labelling == params.labelling and loaded.paths.labelling == params.paths.labelling
