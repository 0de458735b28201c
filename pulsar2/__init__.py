"""Pulsar2 stage: build-config generation, the real-image runner, the EMULATOR and the quantization report.

Modules (each a CLI, ``python -m pulsar2.<module> --help``):

- ``pulsar2.config``: ONNX + calibration tar + params -> ``kws_build_int8_config.json`` (schema-validated)
- ``pulsar2.build``: runs the real Pulsar2 image if present, else the emulator; writes the manifest
- ``pulsar2.emulator``: a ``pulsar2 build`` stand-in (ONNX Runtime INT8 QDQ) - NOT the Axera compiler
- ``pulsar2.quant_report``: emulated INT8 vs FP32 on held-back feature tensors
- ``pulsar2.axmodel``: the marked container format of EMULATED axmodels (stdlib only)
"""
