"""Keyword-spotting toolchain for the Axera AX630C: seeds -> dataset -> features -> CRNN -> ONNX."""

__version__ = "0.1.0"
