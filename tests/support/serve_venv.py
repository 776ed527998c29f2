"""A serving-only environment, made as a serving host makes it (`make install-serve`): the serve lock, the package,
the API page's web files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.repo import REPO

# What a serving host must not have (pyproject.toml's `pipeline` extra, and the tables it reads).
PIPELINE_ONLY = ("torch", "transformers", "prefect", "dvc", "great_expectations", "pyspark", "pandas", "pyarrow")


def make_serve_venv(folder: Path) -> Path:
    """Install the serve lock and this project (from a copy: pip builds in the source tree) into `folder`; its bin/."""
    source = folder.with_name(folder.name + "-source")
    for part in ("tasks", "flows"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / part, source / part)
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REPO / "locks" / "serve.txt")], check=True)
    subprocess.run([*pip, "--no-deps", str(source)], check=True)
    fetch = ["-m", "tasks.apps.fetch_web_assets", "--only", "swagger-ui-dist", "--lock", str(REPO / "web-assets.lock")]
    subprocess.run([str(folder / "bin" / "python"), *fetch], check=True, cwd=folder)  # the API page's files
    return folder / "bin"


def importable(bin_folder: Path, modules: tuple[str, ...]) -> list[str]:
    """Those of `modules` the environment's Python can import (find_spec: nothing is run)."""
    probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    found = subprocess.run(
        [str(bin_folder / "python"), "-c", probe, *modules], capture_output=True, text=True, check=True
    ).stdout
    return found.split()
