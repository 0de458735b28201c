# Training / pipeline image: Python 3.11 + torch 2.14.1 + torchaudio 2.11.0 + the pipeline's
# dependencies, installed from docker/requirements.lock with --require-hashes.
# The code is NOT in the image: the Makefile bind-mounts the work tree (RUNNER=docker).
#
#   make build/images/train.id BASE_IMAGE=kws-base:bookworm      (or: invoke images --only train)
#
# BASE_IMAGE is any Debian bookworm image with python3 (3.11) and the venv module: the stock
# python:3.11-slim-bookworm from a registry, or the local debootstrap image (docker/base-image.sh).
# PyPI's torch wheels are the CUDA builds (about 6 GB); they run on the CPU, and on a GPU with
# `docker run --gpus all`. A host CA bundle reaches pip only as the BuildKit secret "cacert".
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="kws-train" \
      org.opencontainers.image.description="KWS AX630C training/pipeline toolchain (code is bind-mounted)"

ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# git: provenance (`git describe`) of the mounted tree; make: the README's commands work inside too;
# espeak-ng: the synthetic speakers of the voices stage.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git make espeak-ng \
 && rm -rf /var/lib/apt/lists/* \
 && git config --system --add safe.directory '*'

COPY docker/requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=cacert,required=false \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && python3 -m venv /opt/venv \
 && pip install --no-deps --require-hashes --only-binary :all: -r /tmp/requirements.lock \
 && rm /tmp/requirements.lock

# Build-time smoke test: the libraries import and a log-Mel spectrogram runs on the CPU.
COPY docker/smoke.py /opt/kws-smoke/smoke.py
RUN python3 /opt/kws-smoke/smoke.py train

WORKDIR /work
CMD ["python3"]
