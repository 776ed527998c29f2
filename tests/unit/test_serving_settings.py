"""Serving settings: code defaults (params.yaml's), the file, the environment, the options; params.yaml optional."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.lib.config import PredictionLogConfig, ServeConfig, load_params
from tasks.lib.errors import ConfigError
from tasks.lib.inference.serving_settings import serving_settings
from tests.support.repo import REPO
from tests.support.serve_venv import PIPELINE_ONLY


@pytest.fixture(autouse=True)
def no_serving_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in os.environ:
        if name.startswith(("TEXTCLF_SERVE_", "TEXTCLF_MONITOR_", "TEXTCLF_REGISTRY")):
            monkeypatch.delenv(name)


def test_the_defaults_in_code_are_params_yamls():
    params = load_params(REPO)
    assert ServeConfig() == params.serve
    assert PredictionLogConfig().model_dump() == params.monitor.model_dump(
        include=set(PredictionLogConfig.model_fields)
    )


def test_without_params_yaml_a_host_serves_with_the_defaults_and_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = serving_settings(tmp_path)
    assert settings.serve == ServeConfig() and settings.registry == tmp_path / "registry"
    monkeypatch.setenv("TEXTCLF_SERVE_PORT", "9100")
    monkeypatch.setenv("TEXTCLF_SERVE_THREADS", "2")
    monkeypatch.setenv("TEXTCLF_MONITOR_LOG_TEXT", "true")
    settings = serving_settings(tmp_path, "s3://team/registry", max_batch=8, threads=None)
    assert (settings.serve.port, settings.serve.threads, settings.serve.max_batch) == (9100, 2, 8)
    assert settings.prediction_log.log_text is True and settings.registry == "s3://team/registry"


def test_the_environment_overrides_the_file_and_options_override_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["serve"] |= {"port": 8100, "max_batch": 4, "max_wait_ms": 5}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("TEXTCLF_SERVE_MAX_BATCH", "16")
    settings = serving_settings(root, max_wait_ms=1.0)
    assert (settings.serve.port, settings.serve.max_batch, settings.serve.max_wait_ms) == (8100, 16, 1.0)
    assert settings.registry == root / "registry"


def test_a_bad_value_names_its_source_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TEXTCLF_SERVE_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"TEXTCLF_SERVE_\*.*\n.*port"):
        serving_settings(tmp_path)
    monkeypatch.setenv("TEXTCLF_SERVE_PORT", "8000")
    with pytest.raises(ConfigError, match="max_batch"):
        serving_settings(tmp_path, max_batch=0)


def test_serving_and_predicting_import_nothing_of_the_pipeline():
    probe = (
        "import sys, tasks.apps.cli, tasks.apps.http_service, tasks.lib.inference.production_model\n"
        f"print(' '.join(m for m in {PIPELINE_ONLY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.split() == []
