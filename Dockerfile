# syntax=docker/dockerfile:1
#
# The worker image: what a Prefect `docker` work pool runs a flow run in (docs/guides/team.md#a-worker-image).
# Python 3.11, the Debian packages and the venv of `make install` (locks/runtime.txt, with the web
# assets), git; no data and no trained models. A flow run works in a clone of the repository that
# prefect.yaml's pull steps make (`textclf deploy --clone`), which gets data and models from the DVC
# remote, or in a workspace folder mounted at its own path. Rebuild the image when locks/runtime.txt
# or web-assets.lock changes: the pull steps' install of the lock is a no-op only while the image
# holds those exact versions.
#
#   docker build -t textclf-worker:cpu .                          # torch CPU build (default)
#   docker build -t textclf-worker:cuda --build-arg TORCH=cuda .  # torch CUDA build, for GPU workers
#
# One file for both: the two images differ only in the torch wheel. PyPI's Linux x86_64 torch
# 2.13.0 is the CUDA 13.0 build and brings CUDA and cuDNN as pip packages (nvidia-*, triton), so
# the GPU image needs no nvidia/cuda base (which would hold a second copy of those libraries, on
# Ubuntu with another Python and other versions of the Debian packages); the host needs only an
# NVIDIA driver >= 580 and the NVIDIA Container Toolkit.
#
# BASE_IMAGE: any Debian 12 image. The default has Python 3.11 in /usr/local; on a bare Debian 12
# (a debootstrap root file system `podman import`ed, as benchmarks/images.py builds it where there
# is no Docker Hub) Debian's own python3 (3.11) and python3-venv are installed instead.

# Debian 12, the release the Makefile's packages are tested on.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# cpu: torch from PyTorch's CPU index (without the CUDA libraries, several GB). cuda: torch from PyPI.
ARG TORCH=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# Optional: a folder of wheels made visible to the build (`podman build -v /opt/wheels:/opt/wheels:ro
# --build-arg PIP_FIND_LINKS=/opt/wheels`), e.g. torch's CPU build where PyTorch's index is out of reach.
ARG PIP_FIND_LINKS
# The Makefile's APT_PACKAGES (tests/unit/test_worker_image.py keeps the two equal).
ARG APT_PACKAGES="apertium apertium-eng-spa wordnet-base"
# The pip that installs the locks (the Makefile takes the newest; an image pins it).
ARG PIP_VERSION=26.3

# TORCH stays set in the image: prefect.yaml's pull step runs install_torch.py, whose default
# (auto: cuda where nvidia-smi lists a GPU) would otherwise swap the build when the container sees
# GPUs other than the image was built for; with TORCH the step is a no-op.
ENV TORCH=${TORCH} \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# git: DVC needs the workspace's repository, and Prefect's git_clone pull step the binary. A
# mounted workspace belongs to the host's user, not the container's: without safe.directory,
# git (and libgit2) refuse to open it ("dubious ownership"). python3-venv only where the base
# has no Python with venv (a bare Debian; Debian's python3 is 3.11 in bookworm).
# No apt version pins (hadolint DL3008 is off in .hadolint.yaml): the base image's release is the pin.
RUN set -- ${APT_PACKAGES} git ca-certificates \
 && { python3 -m venv --help >/dev/null 2>&1 || set -- "$@" python3-venv; } \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
 && rm -rf /var/lib/apt/lists/* \
 && git config --system --add safe.directory '*'

WORKDIR /opt/textclf

# The dependencies first, in their own layer: a code change does not reinstall them.
# The locks pin torch by its public version (torch==2.13.0) and leave out PyPI torch's CUDA
# packages. install_torch.py (standard library only, run by path) installs that version's build for
# TORCH into the venv first: cpu from TORCH_CPU_INDEX (--no-deps; a folder in PIP_FIND_LINKS can
# stand in for the index), cuda from PyPI with the CUDA 13 packages it requires. `pip install -r`
# then finds torch satisfied (2.13.0+cpu matches ==2.13.0: PEP 440 ignores the local label) and
# takes everything else from PyPI at the lock's versions.
COPY locks/runtime.txt locks/
COPY tasks/apps/install_torch.py tasks/apps/
RUN case "$TORCH" in \
      cpu|cuda) ;; \
      *) echo "TORCH must be cpu or cuda, not '$TORCH'" >&2; exit 1 ;; \
    esac \
 && python3 -m venv "$VIRTUAL_ENV" \
 && pip install -q "pip==${PIP_VERSION}" \
 && python tasks/apps/install_torch.py --torch "$TORCH" --lock locks/runtime.txt \
 && pip install -q -r locks/runtime.txt

# Then the code (.dockerignore leaves out .git, the venvs, data, models, the registry and caches),
# installed as `make install` does: editable, and the reports' scripts, styles and fonts into the
# venv (/opt/venv/share/textclf). A flow run imports its clone's or workspace's own tasks/ and
# flows/ (Prefect and `python -m` put the working directory first on sys.path); this copy serves
# the `textclf` command. Last, a check that torch (the build asked for) and the command import.
COPY . .
RUN pip install -q --no-deps -e . \
 && python -m tasks.apps.fetch_web_assets \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && python -c "import sys, torch; sys.exit(bool(torch.version.cuda) != (sys.argv[1] == 'cuda'))" "$TORCH" \
 && textclf --help >/dev/null

# Flow runs start here; Prefect's git_clone step clones into the working directory.
WORKDIR /runs
