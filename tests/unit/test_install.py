"""The install: locks per set for every Python, the torch build the host needs, pins only in the locks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tasks.apps import install_torch
from tasks.apps.install_torch import CPU_INDEX, install_command, locked_version, resolve_choice
from tests.support.repo import REPO
from tests.support.serve_venv import PIPELINE_ONLY

LOCKS = REPO / "locks"
PYTHON = "/venv/bin/python"


def pins(lock: Path) -> dict[str, str]:
    """name -> the version each line of a lock pins (its markers aside)."""
    found = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            found[match.group(1).lower()] = match.group(2)
    return found


def test_cpu_takes_the_cpu_index_without_dependencies_and_keeps_local_wheels():
    env = {"PIP_FIND_LINKS": "/opt/wheels", "HOME": "/root"}
    command = install_command("cpu", "2.13.0", PYTHON, env)
    assert command.argv == [
        PYTHON,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--index-url",
        CPU_INDEX,
        "torch==2.13.0",
    ]
    assert command.env == env  # a folder of CPU wheels may stand in for the index
    mirror = install_command("cpu", "2.13.0", PYTHON, {"TORCH_CPU_INDEX": "https://mirror.example/cpu"})
    assert mirror.argv[-2] == "https://mirror.example/cpu"


def test_cuda_takes_pypi_with_its_cuda_libraries_and_no_local_cpu_wheel():
    env = {"PIP_FIND_LINKS": "/opt/wheels", "PIP_EXTRA_INDEX_URL": "file:///opt/pypi", "HOME": "/root"}
    command = install_command("cuda", "2.13.0", PYTHON, env)
    assert command.argv == [PYTHON, "-m", "pip", "install", "--quiet", "torch==2.13.0"]
    assert command.env == {"HOME": "/root"}
    other = install_command("cuda", "2.13.0", PYTHON, {"TORCH_CUDA_INDEX": "https://download.pytorch.org/whl/cu126"})
    assert other.argv[-3:] == ["--index-url", "https://download.pytorch.org/whl/cu126", "torch==2.13.0"]


def test_auto_is_cuda_only_where_nvidia_smi_lists_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    assert resolve_choice("auto") == "cpu"
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")  # a driver without a GPU
    smi.chmod(0o755)
    assert resolve_choice("auto") == "cpu"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    assert resolve_choice("auto") == "cuda"
    assert resolve_choice("cpu") == "cpu"
    with pytest.raises(ValueError, match="TORCH must be one of auto, cpu, cuda, not 'rocm'"):
        resolve_choice("rocm")


def test_the_installer_runs_before_anything_is_installed_and_prints_its_command():
    # -S: no site-packages, so only the standard library is there (the Dockerfile runs it on a bare Python).
    script = REPO / "tasks" / "apps" / "install_torch.py"
    env = {k: v for k, v in os.environ.items() if k != "TORCH_CPU_INDEX"}
    shown = subprocess.run(
        [sys.executable, "-S", str(script), "--torch", "cpu", "--print"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert shown.stdout.split()[-3:] == ["--index-url", CPU_INDEX, f"torch=={locked_version(LOCKS / 'runtime.txt')}"]
    refused = subprocess.run(
        [sys.executable, "-S", str(script), "--torch", "gpu"], capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2 and "TORCH must be one of auto, cpu, cuda, not 'gpu'" in refused.stderr


def test_the_makefile_the_dockerfile_and_the_pull_steps_choose_torch_the_same_way():
    for file in ("Makefile", "Dockerfile", "prefect.yaml"):
        assert "tasks/apps/install_torch.py" in (REPO / file).read_text(encoding="utf-8"), file


def test_this_environment_has_the_build_it_asked_for():
    installed = install_torch.installed_build()
    assert installed is not None and installed[0] == locked_version(LOCKS / "runtime.txt")


def test_pyproject_says_what_the_code_supports_and_the_locks_pin_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.11"
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    assert not [r for r in requirements if "==" in r], "exact pins belong in the locks"
    runtime, serve, dev = (pins(LOCKS / f"{name}.txt") for name in ("runtime", "serve", "dev"))
    for lock in (runtime, serve, dev):  # PyPI's torch brings these only with TORCH=cuda
        assert not [name for name in lock if re.match(r"(nvidia-cu|nvidia-nv|nvidia-cud|cuda-|triton)", name)]
    assert locked_version(LOCKS / "runtime.txt") == locked_version(LOCKS / "dev.txt")
    # serving and the tools on top of the runtime: the same version of every package they share
    assert [name for name in serve if serve[name] != runtime.get(name, serve[name])] == []
    assert {name: dev[name] for name in runtime} == runtime
    assert not [name for name in serve if name.replace("-", "_") in PIPELINE_ONLY or name == "great-expectations"]
