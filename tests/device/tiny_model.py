"""Tiny test artifacts: an ONNX KWS stand-in, its EMULATED axmodel, and board input folders.

The ONNX has the real model's interface (``input`` float32 [1,1,98,64] -> ``output`` float32 [1,8],
``classes`` and ``contract`` metadata) but is a single Gemm, so it loads and runs in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.io import atomic_write_json, atomic_write_text
from pulsar2 import axmodel
from tests.conftest import crnn_contract

CLASSES = ["ACOPLAR", "AVANZAR", "DESACOPLAR", "DETENER", "FONDO", "IZQUIERDA", "DERECHA", "RETROCEDER"]


def tiny_onnx_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    w = (0.02 * rng.standard_normal((98 * 64, len(CLASSES)))).astype(np.float32)
    b = (0.1 * rng.standard_normal(len(CLASSES))).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["output"]),
        ],
        "tiny_kws",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 98, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, len(CLASSES)])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in (("classes", json.dumps(CLASSES)), ("contract", crnn_contract().to_json())):
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_build(build: Path, n_inputs: int = 6, npu_mode: str = "NPU1", seed: int = 0) -> Path:
    """A build tree with what deploy/eval-npu read: model/kws.onnx, pulsar2/output/*, npu_inputs/*."""
    onnx_bytes = tiny_onnx_bytes(seed)
    (build / "model").mkdir(parents=True, exist_ok=True)
    (build / "model" / "kws.onnx").write_bytes(onnx_bytes)
    meta = {
        "target_hardware": "AX620E",
        "npu_mode": npu_mode,
        "input": {"name": "input", "shape": [1, 1, 98, 64], "dtype": "float32"},
        "output": {"name": "output", "shape": [1, len(CLASSES)], "dtype": "float32"},
        "compiler": "pulsar2-emulator test",
    }
    out = build / "pulsar2" / "output"
    axmodel.write_emulated(out / "compiled.axmodel", onnx_bytes, meta)
    atomic_write_json(out / "manifest.json", {"stage": "pulsar2.build", "emulated": True})
    npu = build / "npu_inputs"
    rng = np.random.default_rng(seed + 1)
    rows = ["k,i,path,class,label"]
    for k in range(n_inputs):
        x = rng.standard_normal((1, 1, 98, 64)).astype("<f4")
        (npu / "input" / str(k)).mkdir(parents=True, exist_ok=True)
        (npu / "input" / str(k) / "input.bin").write_bytes(x.tobytes())
        label = k % len(CLASSES)
        rows.append(f"{k},{100 + k},{CLASSES[label]}/x_{k:05d}.wav,{CLASSES[label]},{label}")
    atomic_write_text(npu / "list.txt", "".join(f"{k}\n" for k in range(n_inputs)))
    atomic_write_text(npu / "labels.csv", "\n".join(rows) + "\n")
    atomic_write_json(npu / "manifest.json", {"stage": "npu_inputs", "count": n_inputs, "classes": CLASSES,
                                            "shape": [1, 1, 98, 64], "input_bytes": 98 * 64 * 4})
    return build


def make_listen_build(build: Path, settings: dict | None = None) -> Path:
    """A build whose model reacts to sound (tests/eval's tone model: a 300 Hz tone is ALFA, 2 kHz BRAVO,
    quiet noise FONDO) as both kws.onnx and the EMULATED axmodel, with detector settings and the board
    runtime packed (device.runtime.pack), so deploy ships a runtime that fires on tones."""
    from device.runtime.pack import pack
    from pipeline.core.detector import DetectorSettings
    from pipeline.core.io import sha256_file
    from tests.eval.conftest import export_tiny_onnx

    make_build(build, n_inputs=2)
    onnx_path = export_tiny_onnx(build / "model" / "kws.onnx")
    meta = {
        "target_hardware": "AX620E", "npu_mode": "NPU1",
        "input": {"name": "input", "shape": [1, 1, 98, 64], "dtype": "float32"},
        "output": {"name": "output", "shape": [1, 3], "dtype": "float32"}, "compiler": "pulsar2-emulator test",
    }
    axmodel.write_emulated(build / "pulsar2" / "output" / "compiled.axmodel", onnx_path.read_bytes(), meta)
    chosen = settings or DetectorSettings(smooth_windows=1, on_threshold=0.9, min_consecutive_windows=2).as_dict()
    atomic_write_json(build / "detector" / "settings.json", {
        "settings": chosen, "model": str(onnx_path), "model_sha256": sha256_file(onnx_path),
        "calibration": {"fa_per_hour": 0.0}})
    pack(onnx_path, build / "detector" / "settings.json", build / "runtime")
    return build


def write_tones(path: Path) -> Path:
    """4 s of quiet noise with the tone model's two "commands": 300 Hz at 1.0 s (ALFA), 2 kHz at 2.5 s (BRAVO)."""
    from tests.conftest import write_wav
    from tests.eval.conftest import SR, quiet_noise, tone

    audio = quiet_noise(4.0)
    audio[int(1.0 * SR):int(1.6 * SR)] += tone(300.0, 0.6, 0.0, tone_s=0.6)
    audio[int(2.5 * SR):int(3.1 * SR)] += tone(2000.0, 0.6, 0.0, tone_s=0.6)
    return write_wav(path, audio)
