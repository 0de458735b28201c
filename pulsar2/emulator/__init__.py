"""PULSAR2 EMULATOR - a stand-in for Axera's ``pulsar2 build``. It is NOT the Axera compiler.

It accepts the same ``pulsar2 build --config X [--overrides]`` invocation, validates the config with the
project's schema, checks the ONNX I/O and the calibration archive against it, quantizes the model FOR REAL
with ONNX Runtime static quantization (QDQ, INT8) calibrated on the archive, and writes
``output_dir/compiled.axmodel`` as the marked EMULATED container (``pulsar2.axmodel``) plus the
intermediates the real tool writes. Only the project's board emulator can run that file.

    python -m pulsar2.emulator build --config build/pulsar2/kws_build_int8_config.json --data-root build
"""

EMULATOR_VERSION = "1.0"
