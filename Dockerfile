# syntax=docker/dockerfile:1
#
# The worker image: what a Prefect `docker` work pool runs a flow run in (docs/guides/team.md#a-worker-image).
# Python 3.11, the Debian packages and the venv of `make install` (with the web assets), git;
# no data and no trained models. A flow run works in a clone of the repository that prefect.yaml's
# pull steps make (`textclf deploy --clone`), which gets data and models from the DVC remote, or
# in a workspace folder mounted at its own path. Rebuild the image when requirements.lock or
# web-assets.lock changes: the pull steps' `pip install -r requirements.lock` is a no-op only
# while the image holds those exact versions.
#
#   docker build -t textclf-worker:cpu .                          # torch CPU build (default)
#   docker build -t textclf-worker:cuda --build-arg TORCH=cuda .  # torch CUDA build, for GPU workers
#
# One file for both: the two images differ only in the torch wheel. PyPI's Linux x86_64 torch
# 2.13.0 is the CUDA 13.0 build and brings CUDA and cuDNN as pip packages (nvidia-*, triton), so
# the GPU image needs no nvidia/cuda base (which would hold a second copy of those libraries, on
# Ubuntu with another Python and other versions of the Debian packages); the host needs only an
# NVIDIA driver >= 580 and the NVIDIA Container Toolkit.

# Debian 12, the release the Makefile's packages are tested on.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# cpu: torch from PyTorch's CPU index (without the CUDA libraries, several GB). cuda: torch from PyPI.
ARG TORCH=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# The Makefile's APT_PACKAGES (tests/unit/test_worker_image.py keeps the two equal).
ARG APT_PACKAGES="apertium apertium-eng-spa wordnet-base"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# git: DVC needs the workspace's repository, and Prefect's git_clone pull step the binary. A
# mounted workspace belongs to the host's user, not the container's: without safe.directory,
# git (and libgit2) refuse to open it ("dubious ownership").
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ${APT_PACKAGES} git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && git config --system --add safe.directory '*'

WORKDIR /opt/textclf

# The dependencies first, in their own layer: a code change does not reinstall them.
# The lock pins torch by its public version (torch==2.13.0). On the CPU index that version is
# 2.13.0+cpu, which `==2.13.0` matches (PEP 440 ignores the local label), so torch goes in first
# from that index alone, and `pip install -r` then finds it satisfied and takes everything else
# from PyPI at the lock's versions. The lock has no --hash lines, so the +cpu wheel's
# different hash does not matter. For cuda the same `pip install -r` takes PyPI's torch 2.13.0,
# and with it the CUDA 13 packages it requires, which the lock (resolved on CPU) does not hold:
# torch pins nvidia-cudnn-cu13, nvidia-nccl-cu13, triton and cuda-toolkit exactly; cuda-bindings,
# cuda-pathfinder and nvidia-nvjitlink take the newest release within CUDA 13.
COPY requirements.lock pyproject.toml ./
RUN python -m venv "$VIRTUAL_ENV" \
 && pip install -q --upgrade pip \
 && case "$TORCH" in \
      cpu) pip install -q --no-deps --index-url "$TORCH_CPU_INDEX" "$(grep -E '^torch==' requirements.lock)" ;; \
      cuda) ;; \
      *) echo "TORCH must be cpu or cuda, not '$TORCH'" >&2; exit 1 ;; \
    esac \
 && pip install -q -r requirements.lock

# Then the code (.dockerignore leaves out .git, the venv, data, models, the registry and caches),
# installed as `make install` does: editable, and the reports' scripts, styles and fonts into the
# venv (/opt/venv/share/textclf). A flow run imports its clone's or workspace's own tasks/ and
# flows/ (Prefect and `python -m` put the working directory first on sys.path); this copy serves
# the `textclf` command. Last, a check that torch and the command import.
COPY . .
RUN pip install -q --no-deps -e . \
 && python -m tasks.apps.fetch_web_assets \
 && python -c "import torch; print('torch', torch.__version__)" \
 && textclf --help >/dev/null

# Flow runs start here; Prefect's git_clone step clones into the working directory.
WORKDIR /runs
