# PULSAR2 EMULATOR image: the training image + the project's Pulsar2 emulator (pulsar2/emulator/).
# It is NOT Axera's Pulsar2: `pulsar2 build` here quantizes with ONNX Runtime and writes an EMULATED
# axmodel that only the project's board emulator runs. The real compiler is Axera's image
# (docker load -i ax_pulsar2_<ver>.tar.gz; see the Makefile's PULSAR2_IMAGE).
#
#   make build/images/pulsar2-emulator.id           (FROM_IMAGE = the training image, from its id file)
#
# Unlike the training image this one bakes its code (pulsar2/, schemas/ and the shared pipeline
# helpers) because the compile step mounts only the build folder at /data/build, like the real image.
ARG FROM_IMAGE=kws-train:latest
FROM ${FROM_IMAGE}

LABEL org.opencontainers.image.title="kws-pulsar2-emulator" \
      org.opencontainers.image.description="PULSAR2 EMULATOR (not the Axera compiler): ONNX Runtime INT8 + EMULATED axmodel" \
      org.kws.emulator="true"

ENV KWS_PULSAR2_EMULATOR=1 \
    KWS_ROOT=/opt/kws \
    PYTHONPATH=/opt/kws

COPY pipeline/__init__.py /opt/kws/pipeline/
COPY pipeline/core/ /opt/kws/pipeline/core/
COPY schemas/ /opt/kws/schemas/
COPY pulsar2/ /opt/kws/pulsar2/
RUN chmod 0755 /opt/kws/pulsar2/emulator/pulsar2 \
 && ln -sf /opt/kws/pulsar2/emulator/pulsar2 /usr/local/bin/pulsar2 \
 && cd /tmp && pulsar2 --help \
 && pulsar2 version

WORKDIR /data
