# Board EMULATOR image: a Debian box with sshd, python3 + numpy + onnxruntime (no torch) and the
# project's ax_run_model emulator at /opt/bin, standing in for the M5Stack LLM Kit (AX630C) over SSH.
# It runs only EMULATED axmodels (pulsar2/axmodel.py); it is not an NPU.
#
#   make build/images/board-emulator.id BASE_IMAGE=kws-base:bookworm
#   docker run -d -p 127.0.0.1:2222:22 -v KEY:/etc/ssh/ssh_host_ed25519_key:ro \
#       -v AUTH:/root/.ssh/authorized_keys:ro kws-board-emulator:latest   (see device/emulator/launch.py)
#
# Host key and authorized_keys are mounted at run time: none is baked into the image.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="kws-board-emulator" \
      org.opencontainers.image.description="AX630C board EMULATOR: sshd + ax_run_model emulator (ONNX Runtime on CPU)" \
      org.kws.emulator="true"

ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssh-server \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*

# numpy + onnxruntime in a venv; setup.sh writes /opt/bin/ax_run_model to run with this interpreter,
# so an SSH session (which does not see Docker ENV) needs no PATH set-up.
COPY docker/board-requirements.lock /tmp/board-requirements.lock
RUN --mount=type=secret,id=cacert,required=false \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --require-hashes --only-binary :all: -r /tmp/board-requirements.lock \
 && rm /tmp/board-requirements.lock

# The board engineer's installer (device/emulator/setup.sh): ax_run_model at /opt/bin, sshd config,
# entrypoint.sh (host key: mounted or made at start; never baked in).
COPY docker/smoke.py /opt/kws-smoke/smoke.py
COPY device/emulator/ /opt/kws-board/emulator/
COPY pulsar2/axmodel.py /opt/kws-board/emulator/axmodel.py
RUN sh /opt/kws-board/emulator/setup.sh /opt/venv/bin/python3 \
 && /opt/venv/bin/python3 /opt/kws-smoke/smoke.py board \
 && /opt/bin/ax_run_model --help | grep -q EMULATOR \
 && ssh-keygen -q -t ed25519 -N '' -f /tmp/smoke_host_key \
 && /usr/sbin/sshd -t -h /tmp/smoke_host_key \
 && rm -f /tmp/smoke_host_key /tmp/smoke_host_key.pub /etc/ssh/ssh_host_* \
 && rm -rf /opt/kws-board /opt/kws-smoke

EXPOSE 22
# entrypoint.sh ends in `exec /usr/sbin/sshd -D -e`.
CMD ["/opt/ax-emulator/entrypoint.sh"]
