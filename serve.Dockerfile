# syntax=docker/dockerfile:1
#
# The serving image: `textclf serve` over a registry mounted at /registry (docs/guides/serving.md#a-serving-image).
# locks/serve.txt only (ONNX Runtime, the HTTP server, the prediction log): no torch, transformers,
# Prefect, DVC or Great Expectations, no git, no params.yaml: settings from TEXTCLF_SERVE_*,
# TEXTCLF_MONITOR_* and TEXTCLF_REGISTRY. It runs as a user without a login (uid 10001), only
# reads the registry, and writes the prediction log to /var/lib/textclf (mount a folder there, or
# set TEXTCLF_MONITOR_LOCATION to where `textclf monitor` reads it).
#
#   docker build -f serve.Dockerfile -t textclf-serve .
#   docker run -p 8000:8000 -v /srv/textclf/registry:/registry:ro textclf-serve
#
# A registry in object storage instead of a folder: `-e TEXTCLF_REGISTRY=s3://bucket/registry` and
# AWS_* in the environment. BASE_IMAGE: any Debian 12 image, as for the worker image (Dockerfile).

ARG BASE_IMAGE=python:3.11-slim-bookworm

# The venv is built in a stage of its own: pip's wheel build of the package and the apt lists stay
# out of the image. Both stages start from the same base, so the venv's python is the same file.
FROM ${BASE_IMAGE} AS build
ARG PIP_VERSION=26.3
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# python3-venv only where the base has no Python with venv (a bare Debian 12: Debian's python3 is 3.11).
# No apt version pins (hadolint DL3008 is off in .hadolint.yaml): the base image's release is the pin.
RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
      apt-get update -q \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3 -m venv "$VIRTUAL_ENV" \
 && pip install -q "pip==${PIP_VERSION}"
WORKDIR /src
# The lock alone first (its own layer: a code change does not reinstall it); it lists every
# package, so --no-deps. Then the package itself, not editable: the image holds no source tree.
COPY locks/serve.txt locks/
RUN pip install -q --no-deps -r locks/serve.txt
COPY pyproject.toml README.md web-assets.lock ./
COPY tasks tasks
COPY flows flows
# The API page's files (/docs: Swagger UI) into the venv, checked against the lock's sha512.
RUN pip install -q --no-deps . \
 && python -m tasks.apps.fetch_web_assets --only swagger-ui-dist --lock web-assets.lock \
 && pip uninstall -q -y pip

FROM ${BASE_IMAGE}
# Debian's python3 only where the base has none (the venv links to it); no apt lists left behind.
RUN if ! command -v python3 >/dev/null; then \
      apt-get update -q \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin textclf \
 && mkdir /registry \
 && install -d -o 10001 -g 10001 /var/lib/textclf
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TEXTCLF_REGISTRY=/registry \
    TEXTCLF_MONITOR_LOCATION=/var/lib/textclf \
    TEXTCLF_SERVE_HOST=0.0.0.0 \
    TEXTCLF_SERVE_PORT=8000

# Mount the registry at /registry, read-only: the service only reads it (and follows production.json).
# The working folder holds no params.yaml, so the settings are the defaults and the variables above.
WORKDIR /var/lib/textclf
USER 10001:10001
EXPOSE 8000
# 200 while a model is loaded and served; 503 (an exception, so exit 1) with none or while draining.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('TEXTCLF_SERVE_PORT', '8000')}/health\", timeout=4)"]
ENTRYPOINT ["textclf", "serve"]
