"""Host inference with the exported ONNX model (ONNX Runtime, CPU).

The ONNX file made by ``pipeline.stages.export`` carries its class names, feature contract, model config and
provenance in ``metadata_props``; :class:`OnnxModel` reads them back so callers never guess which
classes or features a model expects.

Example::

    python -c "from pipeline.model.infer import OnnxModel; m = OnnxModel('build/model/kws.onnx'); print(m.classes)"
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.cli import StageError
from pipeline.core.contract import ContractMismatch, FeatureContract

log = logging.getLogger(__name__)

# metadata_props keys written by pipeline.stages.export
META_CLASSES = "classes"
META_CONTRACT = "contract"
META_PROVENANCE = "provenance"
META_MODEL_CONFIG = "model_config"
REQUIRED_META = (META_CLASSES, META_CONTRACT)


class OnnxModelError(StageError):
    """The ONNX file is missing, unreadable or lacks the metadata pipeline.stages.export writes."""


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``; float32 in, float32 out (float64 stays float64)."""
    z = np.asarray(logits)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float32)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a plain dict (reads the file with ``onnx``)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


class OnnxModel:
    """An exported KWS model: ``.classes``, ``.contract``, ``.logits(x)``, ``.probs(x)``.

    ``x`` is float32 ``(n, 1, n_frames, n_mels)``. A model exported with a static batch of 1 is run
    once per row (that is what pipeline.stages.export produces, and what the NPU compiles).
    """

    def __init__(self, path: str | os.PathLike[str], intra_op_threads: int = 1, row_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        # A static-batch model runs one row per call; rows run in this many threads at once (ONNX Runtime
        # releases the GIL): the 60 min development stream is 36,000 single-window calls.
        self.row_threads = max(1, row_threads if row_threads is not None else min(os.cpu_count() or 1, 8))
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path}: ONNX model not found; build it with `make onnx` (pipeline.stages.export)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several unrelated types for a bad file
            raise OnnxModelError(
                f"{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: {e}); re-export with `make onnx`"
            ) from e
        meta: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise OnnxModelError(
                f"{self.path}: metadata_props lack {missing} (not exported by pipeline.stages.export); "
                "re-export it with `make onnx`"
            )
        try:
            classes = json.loads(meta[META_CLASSES])
            self.contract: FeatureContract = FeatureContract.from_mapping(json.loads(meta[META_CONTRACT]))
        except (json.JSONDecodeError, TypeError, ContractMismatch) as e:
            raise OnnxModelError(f"{self.path}: bad classes/contract metadata ({e}); re-export it with `make onnx`") from e
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or not classes:
            raise OnnxModelError(f"{self.path}: metadata 'classes' must be a non-empty JSON list of names; re-export it")
        self.classes: list[str] = classes
        self.provenance: dict[str, Any] = _json_or_empty(meta.get(META_PROVENANCE), META_PROVENANCE, self.path)
        self.model_config: dict[str, Any] = _json_or_empty(meta.get(META_MODEL_CONFIG), META_MODEL_CONFIG, self.path)
        self.metadata = meta

        inp = self.session.get_inputs()[0]
        out = self.session.get_outputs()[0]
        self.input_name: str = inp.name
        self.output_name: str = out.name
        self.input_shape: list[Any] = list(inp.shape)
        self.static_batch: int | None = inp.shape[0] if isinstance(inp.shape[0], int) else None
        log.debug("loaded %s: classes=%s input=%s %s", self.path, self.classes, self.input_name, self.input_shape)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        arr = np.ascontiguousarray(x, dtype=np.float32)
        want = (1, self.contract.n_frames, self.contract.n_mels)
        if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
            raise ValueError(
                f"{self.path}: expected input float32 (n, {want[0]}, {want[1]}, {want[2]}), got shape {tuple(arr.shape)}; "
                "make it with pipeline.audio.features.logmel"
            )
        return arr

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw logits ``(n, n_classes)`` float32 for feature tensors ``x`` ``(n, 1, n_frames, n_mels)``."""
        arr = self._check_input(x)
        n = arr.shape[0]
        out = np.empty((n, self.n_classes), dtype=np.float32)
        if n == 0:
            return out
        if self.static_batch is None:
            out[:] = self.session.run([self.output_name], {self.input_name: arr})[0].reshape(n, -1)
            return out
        step = self.static_batch
        if n % step:
            raise ValueError(f"{self.path}: static batch {step} does not divide n={n}")

        def run(lo: int, hi: int) -> None:
            for i in range(lo, hi, step):
                out[i:i + step] = self.session.run([self.output_name],
                                                   {self.input_name: arr[i:i + step]})[0].reshape(step, -1)

        calls = n // step
        threads = min(self.row_threads, calls)
        if threads <= 1:
            run(0, n)
            return out
        bounds = [step * (calls * k // threads) for k in range(threads + 1)]
        with concurrent.futures.ThreadPoolExecutor(threads) as ex:
            for f in [ex.submit(run, lo, hi) for lo, hi in zip(bounds, bounds[1:])]:
                f.result()
        return out

    def probs(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(n, n_classes)``."""
        return softmax(self.logits(x))


def _json_or_empty(text: str | None, key: str, path: Path) -> dict[str, Any]:
    """Optional JSON-object metadata; absent -> {}, malformed -> {} with a warning (it is informational only)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        log.warning("%s: metadata %r is not valid JSON (%s); ignoring it", path, key, e)
        return {}
    if not isinstance(value, dict):
        log.warning("%s: metadata %r is not a JSON object; ignoring it", path, key)
        return {}
    return value
