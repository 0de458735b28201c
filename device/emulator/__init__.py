"""The board EMULATOR (ax_run_model on ONNX Runtime) and the loopback SSH endpoints that serve it."""
