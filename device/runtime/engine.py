"""The model session of the board runtime: the axmodel on the NPU through Axera's Python runtime, or an ONNX file.

On the board, ``axengine`` is pyaxengine (AXERA-TECH/pyaxengine, BSD-3-Clause; a wheel installed with
``pip install axengine-<ver>-py3-none-any.whl``, see device/README.md). Its session has ONNX Runtime's
shape: ``InferenceSession(path)``, ``get_inputs()``, ``run(None, {name: array})``. On the board EMULATOR an
``axengine`` of the same shape runs the EMULATED axmodel with ONNX Runtime (device/emulator/axengine).
A ``.onnx`` path runs with ONNX Runtime directly (host parity checks and benchmarks).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class EngineError(RuntimeError):
    pass


class Session:
    """``logits(x)``: float32 ``(1, 1, n_frames, n_mels)`` -> float32 ``(n_classes,)``."""

    def __init__(self, path: str, sess: Any, kind: str, version: str) -> None:
        self.path, self._sess, self.kind, self.version = path, sess, kind, version
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise EngineError(f"{path}: {len(inputs)} inputs; the KWS model has one")
        self.input_name = inputs[0].name
        self.input_shape = tuple(int(d) if isinstance(d, int) else 1 for d in inputs[0].shape)

    def logits(self, x: np.ndarray) -> np.ndarray:
        if tuple(x.shape) != self.input_shape:
            raise EngineError(f"{self.path}: input of shape {tuple(x.shape)}, the model takes {self.input_shape}")
        out = self._sess.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32).reshape(-1)


def open_session(path: str) -> Session:
    if not os.path.isfile(path):
        raise EngineError(f"{path}: model not found; deploy the bundle again (invoke deploy)")
    if path.endswith(".onnx"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        return Session(path, sess, "onnxruntime", ort.__version__)
    try:
        import axengine
    except ImportError as e:
        raise EngineError(
            f"cannot import axengine ({e}): install Axera's Python runtime on the board "
            "(pip install axengine-<ver>-py3-none-any.whl from github.com/AXERA-TECH/pyaxengine/releases; device/README.md)"
        ) from None
    try:
        sess = axengine.InferenceSession(path)
    except Exception as e:  # the vendor runtime raises bare Exceptions and SystemErrors
        raise EngineError(f"{path}: axengine cannot load the model ({type(e).__name__}: {e})") from None
    kind = "axengine EMULATOR" if getattr(axengine, "EMULATOR", False) else "axengine"
    return Session(path, sess, kind, str(getattr(axengine, "__version__", "?")))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - float(np.max(logits))
    e = np.exp(z)
    return e / e.sum()
