"""Recipes: params overlays merged into params.yaml, or handed to `dvc exp run`."""

import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.apps.cli import main
from tasks.lib.config import load_params
from tasks.lib.errors import ConfigError
from tasks.lib.recipes import apply_recipe, load_recipe, recipe_arguments
from tasks.lib.stage_runner import run_stage
from tasks.stages import ingest, split, validate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    return tmp_path


def test_a_recipe_changes_its_keys_and_keeps_the_rest_of_params_yaml(workspace: Path, capsys):
    before = (workspace / "params.yaml").read_text().splitlines()
    assert main(["--root", str(workspace), "recipe", "conll2003"]) == 0
    assert "params.yaml: recipe 'conll2003' changed 8 keys:" in capsys.readouterr().out
    after = (workspace / "params.yaml").read_text().splitlines()
    # Line for line: only the changed keys' lines differ; comments, nulls and order stay.
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert [new.split(":")[0].strip() for _, new in changed] == [
        "task",
        "source",
        "labels",
        "text_language",
        "conflicting_labels",
        "split_leakage",
        "duplicate_exact",
        "duplicate_normalised",
    ]
    assert "  labels: [PER, ORG, LOC, MISC]" in after
    params = load_params(workspace)
    assert params.task == "token_classification" and params.data.labels == ["PER", "ORG", "LOC", "MISC"]
    assert apply_recipe(workspace, "conll2003") == []  # applied twice: nothing more to change


def test_a_recipe_as_dvc_exp_run_arguments_sets_the_same_values(workspace: Path, capsys):
    assert main(["--root", str(workspace), "recipe", "conll2003", "--dvc-args"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[::2] == ["-S"] * (len(words) // 2)
    # DVC reads each value as YAML, as here.
    set_values = {key: yaml.safe_load(value) for key, value in (word.split("=", 1) for word in words[1::2])}
    assert set_values["data.labels"] == ["PER", "ORG", "LOC", "MISC"]
    assert set_values["validate.rules.split_leakage"] == "warn"
    assert len(set_values) == len(recipe_arguments(load_recipe(workspace, "conll2003"))) // 2
    assert (workspace / "params.yaml").read_text() == (REPO / "params.yaml").read_text()  # nothing changed


def test_a_recipe_that_does_not_fit_leaves_params_yaml_alone(workspace: Path):
    (workspace / "recipes" / "typo.yaml").write_text("train:\n  epoch: 3\n")
    before = (workspace / "params.yaml").read_text()
    with pytest.raises(
        ConfigError,
        match=r"(?s)recipe 'typo' does not fit .*params\.yaml \(left unchanged\): .*train\.epoch: unknown key",
    ):
        apply_recipe(workspace, "typo")
    assert (workspace / "params.yaml").read_text() == before
    with pytest.raises(ConfigError, match=r"no such recipe; there are \['conll2003', 'demo-entities', 'typo'\]"):
        apply_recipe(workspace, "conll2004")


def test_the_conll2003_recipe_keeps_the_standard_splits(workspace: Path):
    apply_recipe(workspace, "conll2003")
    source = (REPO.parent / "shared" / "data" / "conll2003").resolve()
    text = (workspace / "params.yaml").read_text().replace("../shared/data/conll2003", str(source))
    (workspace / "params.yaml").write_text(text)
    for stage in (ingest, validate, split):
        assert run_stage(stage.run, workspace) == 0
    params = load_params(workspace)
    sizes = {name: len(pd.read_parquet(params.path(f"{name}_split"))) for name in ("train", "val", "test")}
    assert sizes == {"train": 14041, "val": 3250, "test": 3453}
