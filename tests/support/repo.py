"""The repository under test, its params, repo copies and child processes: what tests import by name."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SST2 = REPO.parent / "shared" / "data" / "sst2"
BIN = Path(sys.executable).parent


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


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


# A workspace (a repo copy) driven as a person would: the flow, DVC, and what they say.
UP_TO_DATE = "Data and pipelines are up to date."


def set_params(repo: Path, overrides: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))


def flow(repo: Path, check: bool = True):
    return run([sys.executable, "-m", "tasks", "run"], repo, check=check)


def dvc(repo: Path, *args: str):
    return run([str(BIN / "dvc"), *args], repo)


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)
