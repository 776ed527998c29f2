"""Recipes: params overlays merged into params.yaml, or handed to `dvc exp run`."""

import difflib
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.apps.cli import main
from tasks.lib.config import load_params
from tasks.lib.errors import ConfigError
from tasks.lib.recipes import apply_recipe
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
    assert "params.yaml: recipe 'conll2003' changed 14 keys:" in capsys.readouterr().out
    after = (workspace / "params.yaml").read_text().splitlines()
    # Line for line: only the changed keys' lines differ, new keys come in as lines of their own;
    # comments, nulls and order stay.
    blocks = difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes()
    assert {kind for kind, *_ in blocks} == {"equal", "replace", "insert"}
    replaced = [line for kind, i1, i2, j1, j2 in blocks if kind == "replace" for line in after[j1:j2]]
    assert all(i2 - i1 == j2 - j1 for kind, i1, i2, j1, j2 in blocks if kind == "replace")
    assert [line.split(":")[0].strip() for line in replaced] == [
        "task",
        "source",
        "labels",
        "text_language",
        "conflicting_labels",
        "split_leakage",
        "duplicate_exact",
        "duplicate_normalised",
        "max_length",
        "learning_rate",
    ]
    inserted = [line.strip() for kind, _, _, j1, j2 in blocks if kind == "insert" for line in after[j1:j2]]
    assert inserted == ["f1: {min: 0.8, change: {min: -0.01}}", "f1.*: {min: 0.6, change: {min: -0.02}}"]
    assert "  labels: [PER, ORG, LOC, MISC]" in after
    params = load_params(workspace)
    assert params.task == "token_classification" and params.data.labels == ["PER", "ORG", "LOC", "MISC"]
    assert apply_recipe(workspace, "conll2003") == []  # applied twice: nothing more to change


def test_a_recipe_as_dvc_exp_run_arguments_sets_the_same_values(workspace: Path, capsys, tmp_path: Path):
    from dvc.utils.hydra import apply_overrides

    assert main(["--root", str(workspace), "recipe", "conll2003", "--dvc-args"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[::2] == ["-S"] * (len(words) // 2)
    assert (workspace / "params.yaml").read_text() == (REPO / "params.yaml").read_text()  # nothing changed
    # DVC's own parser of `-S` (Hydra's override grammar) on a params.yaml whose label map must be
    # cleared, and the recipe merged by `textclf recipe`: the same params. `gate.metrics` gains
    # `f1.*`, a key no dotted path can name.
    mapped = yaml.safe_load((REPO / "params.yaml").read_text())
    mapped["data"]["label_map"] = {0: "negative", 1: "positive"}
    for folder in (tmp_path / "dvc", workspace):
        folder.mkdir(exist_ok=True)
        (folder / "params.yaml").write_text(yaml.safe_dump(mapped))
    apply_overrides(tmp_path / "dvc" / "params.yaml", words[1::2])
    apply_recipe(workspace, "conll2003")
    by_dvc = yaml.safe_load((tmp_path / "dvc" / "params.yaml").read_text())
    assert by_dvc == yaml.safe_load((workspace / "params.yaml").read_text())
    assert by_dvc["data"]["label_map"] == {} and by_dvc["gate"]["metrics"]["f1.*"] == {
        "min": 0.6,
        "change": {"min": -0.02},
    }
    assert by_dvc["gate"]["metrics"]["accuracy"] == mapped["gate"]["metrics"]["accuracy"]  # merged, not replaced


def test_a_recipe_that_does_not_fit_leaves_params_yaml_alone(workspace: Path):
    (workspace / "recipes" / "typo.yaml").write_text("train:\n  epoch: 3\n")
    before = (workspace / "params.yaml").read_text()
    with pytest.raises(
        ConfigError,
        match=r"(?s)recipe 'typo' does not fit .*params\.yaml \(left unchanged\): .*train\.epoch: unknown key",
    ):
        apply_recipe(workspace, "typo")
    assert (workspace / "params.yaml").read_text() == before
    with pytest.raises(
        ConfigError,
        match=r"no such recipe; there are "
        r"\['conll2003', 'conll2003-mpnet', 'demo-entities', 'distill', 'sst2-5k', 'sst2-full', 'typo'\]",
    ):
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


def test_the_conll2003_mpnet_recipe_applies_over_conll2003(workspace: Path):
    apply_recipe(workspace, "conll2003")
    apply_recipe(workspace, "conll2003-mpnet")
    params = load_params(workspace)
    assert params.task == "token_classification" and params.data.source == "../shared/data/conll2003"
    assert params.train.base_model == "venv:all-mpnet-base-v2" and params.train.eval_steps == 300
    assert params.quantize.variants["int8_dynamic"].op_types == ["MatMul"]


def test_the_distill_recipe_turns_distillation_on_with_a_smaller_student(workspace: Path):
    apply_recipe(workspace, "distill")
    train = load_params(workspace).train
    assert train.distill.enabled and train.encoder_layers == 3


def test_the_sst2_5k_recipe_trains_mpnet_on_5000_sst2_rows(workspace: Path):
    apply_recipe(workspace, "sst2-5k")
    params = load_params(workspace)
    assert params.data.source == "../shared/data/sst2" and params.split.max_train_rows == 5000
    assert params.train.base_model == "venv:all-mpnet-base-v2" and params.data.label_map == {
        "0": "negative",
        "1": "positive",
    }


def test_the_sst2_full_recipe_applies_over_sst2_5k(workspace: Path):
    apply_recipe(workspace, "sst2-5k")
    apply_recipe(workspace, "sst2-full")
    params = load_params(workspace)
    assert params.data.source == "../shared/data/sst2" and params.split.max_train_rows is None
    assert params.train.base_model == "venv:all-mpnet-base-v2" and params.train.learning_rate == 3e-5
    assert params.train.epochs == 1 and params.train.eval_steps == 1000
