"""Each kind of broken input is named by the right error or rule, and loses nothing.

The workspace holds an accepted dataset and a production model from an
earlier good run; after each broken input both must be byte-identical.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tasks.lib.config import RulesConfig, load_params
from tasks.lib.data.readers import DataError
from tasks.lib.storage.registry import Registry
from tasks.stages import ingest, validate
from tests.data.corpus import CASES, NER_CASES, STRICT, Case, csv_bytes, good_rows
from tests.support.repo import deep_merge, repo_params

BASE = {"data": {"source": "good.csv"}, "validate": {"min_rows": 50}}


def configure(workspace: Path, *overrides: dict):
    merged = deep_merge(repo_params(), BASE)
    for override in overrides:
        merged = deep_merge(merged, override)
    (workspace / "params.yaml").write_text(yaml.safe_dump(merged))
    return load_params(workspace)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def accepted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after a good run: validated data, and a production model in the registry."""
    workspace = tmp_path_factory.mktemp("accepted")
    (workspace / "good.csv").write_bytes(csv_bytes(good_rows()))
    params = configure(workspace)
    ingest.run(params)
    validate.run(params)
    model = workspace / "model-v1"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"stands in for the production model")
    registry = Registry(params.path("registry"))
    registry.set_production(registry.register(model, {"model_md5": "0" * 32}), "first model")
    return workspace


@pytest.fixture
def workspace(accepted: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "workspace"
    shutil.copytree(accepted, copy)
    return copy


@pytest.mark.parametrize("case", CASES + NER_CASES, ids=[case.id for case in CASES + NER_CASES])
def test_broken_input_is_named_and_loses_nothing(workspace: Path, case: Case):
    for name, content in case.files.items():
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_bytes(content)
    params = configure(workspace, STRICT, {"data": {"source": case.source}}, case.overrides)
    validated = params.path("validated").read_bytes()
    production = snapshot(params.path("registry"))

    if case.read_error:
        with pytest.raises(DataError, match=case.read_error):
            ingest.run(params)
    else:
        ingest.run(params)
        with pytest.raises(validate.ValidationFailed) as failure:
            validate.run(params)
        summary = json.loads((params.path("metrics") / "validate.json").read_text())
        assert summary["failed_rules"] == [case.rule]
        assert f"Validation FAILED ({case.rule})" in str(failure.value)
        if case.line is not None:
            quarantined = [json.loads(line) for line in params.path("quarantine").read_text().splitlines()]
            lines = {r["line"] for r in quarantined if any(x.startswith(case.rule + ":") for x in r["reasons"])}
            assert case.line in lines
            assert f":{case.line}: " in str(failure.value)  # the report points at the row

    assert params.path("validated").read_bytes() == validated
    assert snapshot(params.path("registry")) == production


def test_the_corpus_covers_at_least_fifteen_kinds():
    assert len({case.id for case in CASES}) >= 15
    assert len({case.id for case in NER_CASES}) >= 8  # token classification
    cases = CASES + NER_CASES
    assert {case.rule for case in cases if case.rule} == set(RulesConfig.model_fields)  # every rule has a broken input
