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
from pipeline.core.workers import cpu_session

log = logging.getLogger(__name__)

# metadata_props keys written by pipeline.stages.export
META_CLASSES = "classes"
META_CONTRACT = "contract"
META_PROVENANCE = "provenance"
META_MODEL_CONFIG = "model_config"
REQUIRED_META = (META_CLASSES, META_CONTRACT)
# Logits of the graph in halves (EmbeddingSplit) vs the whole graph on one window: the same nodes in the same
# order give the same floats; anything above this means the cut is not where the embedding ends.
SPLIT_TOLERANCE = 1e-4


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
        self.path = Path(path)
        # A static-batch model runs one row per call; rows run in this many threads at once (ONNX Runtime
        # releases the GIL): an hour of development talk is 36,000 single-window calls.
        self.row_threads = max(1, row_threads if row_threads is not None else min(os.cpu_count() or 1, 8))
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path}: ONNX model not found; build it with `make onnx` (pipeline.stages.export)")
        try:
            self.session = cpu_session(str(self.path), intra_op_threads)
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

    def embedding_split(self) -> EmbeddingSplit | None:
        """The graph cut after its frozen embedding (:class:`EmbeddingSplit`), or None: not the embedding family,
        a graph that does not cut there, or one whose halves do not give the whole graph's logits."""
        if not hasattr(self, "_split"):
            self._split = EmbeddingSplit.of(self)
        return self._split


class EmbeddingSplit:
    """An embedding-family graph in two halves, for long streams: ``embed`` runs the frozen front end over any
    number of feature frames (its time padding is "valid", so the embedding at frame p depends on frames
    ``[p, p + WINDOW_FRAMES)`` only, whatever the input length), ``head_logits`` runs the head on the
    embeddings of one window each. Overlapping windows then share their embeddings instead of recomputing
    them (a stream at a 100 ms hop computes each embedding 16 / 5 times otherwise). Both halves are the
    exported file's own nodes and weights; :meth:`of` checks that they reproduce the whole graph.
    """

    def __init__(self, model: OnnxModel, embed: Any, head: Any, cut: str) -> None:
        from pipeline.model.embedding import STRIDE_FRAMES, n_windows

        self.stride_frames = STRIDE_FRAMES
        self.n_embeddings = n_windows(model.contract.n_frames)
        self._embed, self._head, self._cut, self._input = embed, head, cut, model.input_name

    @classmethod
    def of(cls, model: OnnxModel) -> EmbeddingSplit | None:
        if model.metadata.get("family") != "embedding":
            return None
        try:
            halves, why = _halves(model.path, model.input_name, model.output_name), "no single Flatten whose input alone feeds the head"
        except Exception as e:  # onnx raises several unrelated types for graphs it cannot take apart
            halves, why = None, f"{type(e).__name__}: {e}"
        if halves is None:
            log.warning("%s: the graph does not cut after its embedding (%s); windows are scored one by one",
                        model.path, why)
            return None
        try:
            sessions = [cpu_session(half.SerializeToString()) for half in halves[:2]]
            split = cls(model, *sessions, halves[2])
            x = np.random.default_rng(0).standard_normal(model.contract.input_shape).astype(np.float32)
            got = split.head_logits(split.embed(x[0, 0])[None])
        except Exception as e:  # onnxruntime raises several unrelated types
            log.warning("%s: the graph does not run in halves (%s: %s); windows are scored one by one",
                        model.path, type(e).__name__, e)
            return None
        diff = float(np.max(np.abs(got - model.logits(x))))
        if diff > SPLIT_TOLERANCE:
            log.warning("%s: the halves differ from the whole graph by %.3g; windows are scored one by one",
                        model.path, diff)
            return None
        return split

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """``(n_frames, n_mels)`` features -> ``(k, dim)``: the embeddings at frames 0, stride, 2·stride, …"""
        x = np.ascontiguousarray(frames, dtype=np.float32)[None, None]
        return self._embed.run(None, {self._input: x})[0][0]

    def head_logits(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, n_embeddings, dim)`` -> logits ``(n, n_classes)``."""
        return self._head.run(None, {self._cut: np.ascontiguousarray(embeddings, dtype=np.float32)})[0]


def _halves(path: Path, input_name: str, output_name: str) -> tuple[Any, Any, str] | None:
    """(front end, head, cut tensor): the graph cut at the input of its one Flatten, the front end with a free
    number of frames, the head with a free number of windows; None when the graph has no such cut."""
    import onnx
    from onnx import helper

    whole = onnx.load(str(path))
    graph = whole.graph
    flat = [n for n in graph.node if n.op_type == "Flatten"]
    if len(flat) != 1:
        return None
    cut = flat[0].input[0]
    producer = {o: n for n in graph.node for o in n.output}
    front_ids: set[int] = set()
    todo = [cut]
    while todo:
        node = producer.get(todo.pop())
        if node is not None and id(node) not in front_ids:
            front_ids.add(id(node))
            todo.extend(node.input)
    front = [n for n in graph.node if id(n) in front_ids]
    head = [n for n in graph.node if id(n) not in front_ids]
    made = {o for n in head for o in n.output}
    needed = {i for n in head for i in n.input if i and i not in made and i != cut}
    head = [n for n in front if n.op_type == "Constant" and set(n.output) & needed] + head  # constants go both ways
    made |= {o for n in head for o in n.output}
    inits = {t.name: t for t in graph.initializer}
    if any(i and i not in made and i != cut and i not in inits for n in head for i in n.input):
        return None  # the head reads more of the front end than the cut

    def half(nodes: list[Any], inputs: list[Any], output: str) -> Any:
        used = {i for n in nodes for i in n.input}
        g = helper.make_graph(nodes, "half", inputs, [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
                              [t for name, t in inits.items() if name in used])
        return helper.make_model(g, opset_imports=whole.opset_import, ir_version=whole.ir_version)

    source = next(v for v in graph.input if v.name == input_name)
    shape = [d.dim_value or d.dim_param for d in source.type.tensor_type.shape.dim]
    frames_free = helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, [*shape[:2], "frames", *shape[3:]])
    windows_free = helper.make_tensor_value_info(cut, onnx.TensorProto.FLOAT, None)
    return half(front, [frames_free], cut), half(head, [windows_free], output_name), cut


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
