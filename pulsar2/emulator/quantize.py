"""INT8 static quantization with ONNX Runtime, the emulator's stand-in for Pulsar2's quantizer.

QDQ format, QInt8 activations (per tensor) and weights (per output channel, as NPU toolchains quantize
convolutions; Pulsar2's own weight granularity is not documented, so this is an assumption), calibrated on the
given arrays. Per-tensor weights measured far worse on the speech-embedding family (INT8 vs FP32 top-1
agreement 0.94 vs 0.96 on a smoke model; mean output cosine 0.981 vs 0.996). Pulsar2 calibration methods map
to ONNX Runtime's as follows (ORT has no MSE search, so MSE uses the closest clipping method):

    MinMax     -> CalibrationMethod.MinMax
    Percentile -> CalibrationMethod.Percentile (CalibPercentile 99.999)
    KL         -> CalibrationMethod.Entropy    (KL-divergence threshold search)
    MSE        -> CalibrationMethod.Percentile (approximation; stated in the emulator's log and metadata)

``layer_configs`` entries with ``data_type`` U16/S16 become per-tensor 16-bit overrides (QUInt16/QInt16) on
the outputs of the selected nodes; FP32 leaves the selected nodes unquantized.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METHODS = {
    "MinMax": ("MinMax", {}),
    "Percentile": ("Percentile", {"CalibPercentile": 99.999}),
    "KL": ("Entropy", {}),
    "MSE": ("Percentile", {"CalibPercentile": 99.999}),
}


class _Reader:
    """onnxruntime CalibrationDataReader over a list of arrays (one feed per array)."""

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray]) -> None:
        self._it: Iterator[np.ndarray] = iter(arrays)
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        a = next(self._it, None)
        return None if a is None else {self.input_name: np.ascontiguousarray(a, dtype=np.float32)}

    def rewind(self) -> None:  # not needed by quantize_static's single pass
        raise RuntimeError("calibration reader cannot rewind")


def select_nodes(model: Any, layer_config: dict[str, Any]) -> list[Any]:
    """ONNX nodes a Pulsar2 layer_configs entry selects (start/end subgraph DEFAULT..DEFAULT = all nodes)."""
    nodes = list(model.graph.node)
    if "layer_name" in layer_config:
        return [n for n in nodes if n.name == layer_config["layer_name"]]
    if "layer_names" in layer_config:
        return [n for n in nodes if n.name in set(layer_config["layer_names"])]
    if "op_type" in layer_config:
        return [n for n in nodes if n.op_type == layer_config["op_type"]]
    if "op_types" in layer_config:
        return [n for n in nodes if n.op_type in set(layer_config["op_types"])]
    if layer_config.get("start_tensor_names") == ["DEFAULT"] and layer_config.get("end_tensor_names") == ["DEFAULT"]:
        return nodes
    raise ValueError(f"layer_configs entry {layer_config} selects a subgraph by tensor names; "
                     "the emulator supports layer_name(s), op_type(s) and DEFAULT..DEFAULT")


def quantize(float_path: Path, out_path: Path, input_name: str, arrays: Sequence[np.ndarray], method: str,
             layer_configs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Quantize ``float_path`` to ``out_path``; returns a summary (method mapping, op counts, overrides)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    ort_method, extra = METHODS[method]
    model = onnx.load(str(float_path))
    exclude: list[str] = []
    overrides: dict[str, list[dict[str, Any]]] = {}
    for lc in layer_configs:
        dtype = lc.get("data_type", "U8")
        picked = select_nodes(model, lc)
        if not picked:
            raise ValueError(f"layer_configs entry {lc} selects no node of {float_path.name}")
        for node in picked:
            if dtype == "FP32":
                exclude.append(node.name)
            elif dtype in ("U16", "S16"):
                qt = QuantType.QUInt16 if dtype == "U16" else QuantType.QInt16
                for t in node.output:
                    if t:
                        overrides[t] = [{"quant_type": qt}]
    options: dict[str, Any] = dict(extra)
    if overrides:
        options["TensorQuantOverrides"] = overrides
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs "consider pre-processing" on the root logger every run
    try:
        quantize_static(
            str(float_path), str(out_path), _Reader(input_name, arrays), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=getattr(CalibrationMethod, ort_method), nodes_to_exclude=exclude or None, extra_options=options,
        )
    finally:
        root.setLevel(level)
    q = onnx.load(str(out_path))
    consumers = collections.Counter()
    dq_outputs = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    for n in q.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_outputs for i in n.input):
            consumers[n.op_type] += 1
    float_ops = collections.Counter(n.op_type for n in model.graph.node)
    return {
        "format": "QDQ",
        "activation_type": "QInt8",
        "weight_type": "QInt8",
        "weight_granularity": "per output channel",
        "pulsar2_method": method,
        "onnxruntime_method": ort_method,
        "onnxruntime_extra_options": {k: v for k, v in extra.items()},
        "method_is_approximation": method == "MSE",
        "calibration_tensors": len(arrays),
        "ops_with_int8_inputs": dict(sorted(consumers.items())),
        "float_model_ops": dict(sorted(float_ops.items())),
        "u16_or_s16_tensors": sorted(overrides),
        "fp32_nodes": sorted(exclude),
    }
