from pathlib import Path

import pytest
import yaml

from tasks.lib.config import load_params
from tasks.lib.errors import ConfigError
from tests.support.repo import REPO, deep_merge, repo_params


def write(tmp_path: Path, params: dict) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_repo_params_load_and_resolve_paths_against_root():
    params = load_params(REPO)
    assert params.data.source == "demo"
    assert params.path("raw") == REPO / "data/raw/dataset.parquet"
    assert params.validate_.rules.duplicate_exact == "quarantine"


def test_unknown_key_is_named(tmp_path):
    bad = deep_merge(repo_params(), {"train": {"learning_rte": 0.1}})
    with pytest.raises(ConfigError, match=r"train\.learning_rte: unknown key"):
        load_params(write(tmp_path, bad))


def test_bad_value_is_named(tmp_path):
    bad = deep_merge(repo_params(), {"train": {"learning_rate": "fast"}})
    with pytest.raises(ConfigError, match=r"train\.learning_rate: .*fast"):
        load_params(write(tmp_path, bad))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("learning_rate", -0.001, r"train\.learning_rate: .*greater than 0"),
        ("lr_scheduler", "exponential", r"train\.lr_scheduler: .*'linear' or 'cosine'.*exponential"),
        ("gradient_accumulation_steps", 0, r"train\.gradient_accumulation_steps: .*greater than or equal to 1"),
    ],
)
def test_bad_training_params_are_named(tmp_path, key, value, message):
    bad = deep_merge(repo_params(), {"train": {key: value}})
    with pytest.raises(ConfigError, match=message):
        load_params(write(tmp_path, bad))


def test_missing_key_is_named(tmp_path):
    bad = repo_params()
    del bad["gate"]["change_test"]
    with pytest.raises(ConfigError, match=r"gate\.change_test: missing key"):
        load_params(write(tmp_path, bad))


@pytest.mark.parametrize(
    ("rule", "policy"), [("label_in_set", "ignore"), ("label_in_set", "warn"), ("min_rows", "quarantine")]
)
def test_bad_policy_is_named(tmp_path, rule, policy):
    # Unknown labels cannot be trained on; a dataset rule has no rows to set aside.
    bad = deep_merge(repo_params(), {"validate": {"rules": {rule: policy}}})
    with pytest.raises(ConfigError, match=rf"validate\.rules\.{rule}"):
        load_params(write(tmp_path, bad))


def test_label_map_must_map_into_the_label_set(tmp_path):
    bad = deep_merge(repo_params(), {"data": {"label_map": {0: "negative", 1: "great"}}})
    with pytest.raises(ConfigError, match=r"data: .*label_map maps to \['great'\]"):
        load_params(write(tmp_path, bad))


def test_numeric_labels_and_single_text_column_are_accepted(tmp_path):
    params = load_params(
        write(tmp_path, deep_merge(repo_params(), {"data": {"labels": [0, 1], "text_column": "sentence"}}))
    )
    assert params.data.labels == ["0", "1"]
    assert params.data.text_column == ["sentence"]


def test_duplicate_labels_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.labels"):
        load_params(write(tmp_path, deep_merge(repo_params(), {"data": {"labels": ["a", "a"]}})))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path)
    (tmp_path / "params.yaml").write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path)


def test_a_variant_may_not_take_the_pytorch_baselines_name(tmp_path):
    variants = {"pytorch_fp32": {"kind": "fp32", "graph": "optimized"}}
    bad = deep_merge(repo_params(), {"quantize": {"variants": variants}})
    with pytest.raises(ConfigError, match=r"quantize\.variants: .*'pytorch_fp32' is what the PyTorch baseline"):
        load_params(write(tmp_path, bad))


def test_an_openvino_variant_must_start_from_the_plain_graph(tmp_path):
    variants = {"ov": {"kind": "openvino", "graph": "optimized", "precision": "bf16"}}
    bad = deep_merge(repo_params(), {"quantize": {"variants": variants}})
    with pytest.raises(ConfigError, match=r"quantize\.variants\.ov.*graph must be exported: OpenVINO cannot read"):
        load_params(write(tmp_path, bad))
