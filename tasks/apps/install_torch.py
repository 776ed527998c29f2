"""Install the torch build this host needs, before the lock: `TORCH=cpu|cuda|auto` (docs/getting-started.md#install).

The locks pin torch by its public version (torch==2.13.0) and leave out the CUDA libraries that
PyPI's Linux build requires. This puts the right build of that version into the running
interpreter's environment first, so `pip install -r locks/runtime.txt` then finds torch satisfied:

- `cpu`: PyTorch's CPU index (`TORCH_CPU_INDEX`, default https://download.pytorch.org/whl/cpu),
  `--no-deps`: the build without CUDA (about 0.2 GB in the environment against 5.5 GB). pip's
  own find-links (`PIP_FIND_LINKS`) still apply: a folder of CPU wheels can stand in for the
  index on a host without a route to it.
- `cuda`: PyPI's build (`TORCH_CUDA_INDEX` for another), with the CUDA libraries it requires.
  Local find-links are dropped for it: a folder of CPU wheels must not stand in for the CUDA build.
- `auto` (the default): `cuda` where `nvidia-smi -L` lists a GPU, else `cpu`.

The Makefile, the Dockerfile and prefect.yaml's pull steps all run this file, so the three choose
alike. Standard library only: it runs before anything else is installed (`python
tasks/apps/install_torch.py`, or `-m tasks.apps.install_torch`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CHOICES = ("auto", "cpu", "cuda")
DEFAULT_LOCK = Path(__file__).resolve().parents[2] / "locks" / "runtime.txt"
# pip settings from the environment that would let a local CPU wheel stand in for the CUDA build.
_LOCAL_SOURCES = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")


@dataclass(frozen=True)
class InstallCommand:
    """One pip command and the environment it runs in."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def host_has_gpu() -> bool:
    """True when `nvidia-smi -L` runs and lists a GPU (an NVIDIA driver is loaded)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def resolve_choice(choice: str) -> str:
    """`auto` made concrete for this host; `cpu` and `cuda` as given.

    Raises:
        ValueError: a choice other than auto, cpu or cuda.
    """
    if choice not in CHOICES:
        raise ValueError(f"TORCH must be one of {', '.join(CHOICES)}, not '{choice}'")
    if choice == "auto":
        return "cuda" if host_has_gpu() else "cpu"
    return choice


def locked_version(lock: Path) -> str:
    """The torch version the lock pins (`torch==X`, markers ignored).

    Raises:
        ValueError: the lock has no `torch==` line.
    """
    for line in lock.read_text(encoding="utf-8").splitlines():
        found = re.match(r"torch==([^\s;]+)", line)
        if found:
            return found.group(1)
    raise ValueError(f"{lock}: no torch==<version> line")


def install_command(choice: str, version: str, python: str, environ: dict[str, str]) -> InstallCommand:
    """The pip command that installs torch `version` for `choice` (cpu or cuda) into `python`'s environment."""
    pip = [python, "-m", "pip", "install", "--quiet"]
    if choice == "cpu":
        index = environ.get("TORCH_CPU_INDEX") or CPU_INDEX
        return InstallCommand([*pip, "--no-deps", "--index-url", index, f"torch=={version}"], dict(environ))
    if choice == "cuda":
        env = {name: value for name, value in environ.items() if name not in _LOCAL_SOURCES}
        cuda_index = environ.get("TORCH_CUDA_INDEX")
        return InstallCommand([*pip, *(["--index-url", cuda_index] if cuda_index else []), f"torch=={version}"], env)
    raise ValueError(f"cannot install torch for '{choice}': expected cpu or cuda")


def installed_build() -> tuple[str, str] | None:
    """(public version, cpu|cuda) of the torch in this environment, or None.

    A build is `cuda` when its metadata requires NVIDIA's libraries or its local label names CUDA
    (2.13.0+cu126); PyPI's CPU-only builds (macOS, aarch64) and the CPU index's (+cpu) are `cpu`.
    """
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
    public, _, local = version.partition("+")
    requires = metadata.requires("torch") or []
    cuda = local.startswith("cu") or any(re.match(r"nvidia-", requirement) for requirement in requires)
    return public, "cuda" if cuda else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", default=os.environ.get("TORCH", "auto"), help="auto, cpu or cuda (env TORCH)")
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="the lock whose torch== version to install")
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    args = parser.parse_args(argv)
    try:
        choice = resolve_choice(args.torch)
        version = locked_version(args.lock)
    except (OSError, ValueError) as exc:
        print(f"install_torch: {exc}", file=sys.stderr)
        return 2
    command = install_command(choice, version, sys.executable, dict(os.environ))
    if args.print:
        print(" ".join(command.argv))
        return 0
    if installed_build() == (version, choice):
        print(f"torch {version} ({choice}) is installed")
        return 0
    print(f"installing torch {version} ({choice} build): {' '.join(command.argv[1:])}", flush=True)
    if subprocess.run(command.argv, env=command.env, check=False).returncode == 0:
        return 0
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    hint = (
        f"no CPU build of torch {version} for Python {python} was found at {command.argv[-2]}"
        + (f" or in PIP_FIND_LINKS={os.environ['PIP_FIND_LINKS']}" if os.environ.get("PIP_FIND_LINKS") else "")
        + ": set TORCH_CPU_INDEX to a mirror of PyTorch's CPU index, or TORCH=cuda to take PyPI's build "
        "(with the CUDA libraries, about 3 GB; it runs on a CPU too)"
        if choice == "cpu"
        else f"pip could not install torch {version} (cuda) for Python {python}: see its message above"
    )
    print(f"install_torch: {hint}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
