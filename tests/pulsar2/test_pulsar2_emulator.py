"""The Pulsar2 EMULATOR: refuses bad input with a clear error and writes nothing; quantizes for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pipeline.core.cli import run_main
from pulsar2 import axmodel
from pulsar2.emulator.cli import main as emulator_main
from tests.pulsar2.pulsar2_fixtures import calib_tar, toy_features

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "pulsar2" / "emulator" / "pulsar2"


def emulate(config: Path, build_dir: Path, *extra: str) -> int:
    return run_main(emulator_main, ["build", "--config", str(config), "--data-root", str(build_dir), *extra])


def edit(config: Path, change) -> Path:
    cfg = json.loads(config.read_text(encoding="utf-8"))
    change(cfg)
    out = config.with_name("edited.json")
    out.write_text(json.dumps(cfg), encoding="utf-8")
    return out


def session(model: bytes | str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def logits(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def test_build_writes_the_axmodel_and_the_intermediates(config_path: Path, build_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert emulate(config_path, build_dir) == 0
    out = build_dir / "pulsar2" / "output"
    for rel in ("compiled.axmodel", "frontend/optimized.onnx", "quant/quant_axmodel.onnx", "quant/quant_axmodel.json",
                "quant/dataset/input/input_00000.npy", "build_context.json"):
        assert (out / rel).is_file(), rel
    assert len(list((out / "quant" / "dataset" / "input").glob("*.npy"))) == 24
    meta, qbytes = axmodel.read_emulated(out / "compiled.axmodel")
    assert qbytes == (out / "quant" / "quant_axmodel.onnx").read_bytes()
    assert (meta["target_hardware"], meta["npu_mode"]) == ("AX620E", "NPU1")
    assert meta["input"] == {"name": "input", "shape": [1, 1, 98, 64], "dtype": "float32"}
    assert meta["output"] == {"name": "output", "shape": [1, 4], "dtype": "float32"}
    assert meta["quantization"]["onnxruntime_method"] == "MinMax" and meta["calibration"]["used"] == 24
    text = capsys.readouterr().out
    assert "PULSAR2 EMULATOR" in text and "NOT the Axera" in text
    assert "Quant Config Table" in text and "24 File(s) Loaded." in text
    assert "| INFO     | pulsar2_emulator" in text


def test_int8_really_quantized_and_agrees_with_fp32(config_path: Path, build_dir: Path) -> None:
    assert emulate(config_path, build_dir) == 0
    _, qbytes = axmodel.read_emulated(build_dir / "pulsar2" / "output" / "compiled.axmodel")
    q = onnx.load_from_string(qbytes)
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    int8_inits = [i for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_inits) >= 3, "weights were not stored as INT8"
    x, y = toy_features(15, seed=99)  # held back: not the calibration tensors (seed 7)
    f = logits(session(str(build_dir / "model" / "kws.onnx")), x)
    i8 = logits(session(qbytes), x)
    assert np.mean(f.argmax(1) == y) >= 0.9, "toy model did not train; the agreement test would be meaningless"
    assert not np.array_equal(f, i8), "INT8 outputs identical to FP32: nothing was quantized"
    agreement = np.mean(f.argmax(1) == i8.argmax(1))
    cos = np.sum(f * i8, 1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(i8, axis=1))
    assert agreement >= 0.95
    assert cos.mean() >= 0.98


@pytest.mark.parametrize("method, ort_method", [("KL", "Entropy"), ("Percentile", "Percentile"), ("MSE", "Percentile")])
def test_calibration_method_override(config_path: Path, build_dir: Path, method: str, ort_method: str) -> None:
    assert emulate(config_path, build_dir, "--quant.calibration_method", method, "--npu_mode", "NPU2",
                   "--quant.precision_analysis", "1", "--compiler.check", "3") == 0
    out = build_dir / "pulsar2" / "output"
    meta, _ = axmodel.read_emulated(out / "compiled.axmodel")
    assert meta["quantization"]["pulsar2_method"] == method
    assert meta["quantization"]["onnxruntime_method"] == ort_method
    assert meta["quantization"]["method_is_approximation"] is (method == "MSE")
    assert meta["npu_mode"] == "NPU2"
    assert (out / "quant" / "debug" / "precision_analysis_table.txt").is_file()


def _wrong_name(cfg: dict) -> None:
    cfg["quant"]["input_configs"][0]["tensor_name"] = "mel"


def _unknown_key(cfg: dict) -> None:
    cfg["quant"]["calib_dir"] = "/data/build/calib"


def _missing_tar(cfg: dict) -> None:
    cfg["quant"]["input_configs"][0]["calibration_dataset"] = "/data/build/calib/nothing.tar"


@pytest.mark.parametrize("change, expected", [
    (_wrong_name, "$.quant.input_configs[0].tensor_name = 'mel' is not an input of the ONNX model"),
    (_unknown_key, "$.quant.calib_dir: unknown key"),
    (_missing_tar, "calibration archive not found"),
])
def test_bad_config_exits_nonzero_and_writes_nothing(config_path: Path, build_dir: Path, change, expected: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert emulate(edit(config_path, change), build_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err
    assert not (build_dir / "pulsar2" / "output").exists()


@pytest.mark.parametrize("array, expected", [
    (np.zeros((1, 98, 64), np.float32), "shape (1, 98, 64), expected (1, 1, 98, 64)"),
    (np.zeros((1, 1, 98, 64), np.float64), "dtype float64"),
    (np.zeros((1, 1, 98, 64), np.int8), "dtype int8"),
])
def test_bad_calibration_arrays(config_path: Path, build_dir: Path, array: np.ndarray, expected: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    calib_tar(build_dir / "calib" / "calib_kws.tar", [array] * 4)
    assert emulate(config_path, build_dir) == 2
    err = capsys.readouterr().err
    assert expected in err and "4 of 4 calibration files" in err
    assert not (build_dir / "pulsar2" / "output").exists()


def test_failed_build_leaves_the_previous_output_alone(config_path: Path, build_dir: Path) -> None:
    assert emulate(config_path, build_dir) == 0
    axm = build_dir / "pulsar2" / "output" / "compiled.axmodel"
    before = axm.read_bytes()
    assert emulate(config_path, build_dir, "--npu_mode", "NPU3") == 2  # AX620E has NPU1/NPU2 only
    assert axm.read_bytes() == before


def test_cli_bool_flags_take_a_value(config_path: Path, build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        emulator_main(["build", "--config", str(config_path), "--quant.precision_analysis", "maybe"])
    assert "expected true/false" in capsys.readouterr().err


def test_launcher_runs_from_a_copied_layout(config_path: Path, build_dir: Path, tmp_path: Path) -> None:
    """The emulator image puts the launcher on PATH; it must find the project at /opt/kws-like roots."""
    root = tmp_path / "opt" / "kws"
    for d in ("pulsar2", "schemas", "pipeline"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pulsar2").symlink_to(root / "pulsar2" / "emulator" / "pulsar2")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    r = subprocess.run(["pulsar2", "version"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "pulsar2-emulator" in r.stdout and "EMULATOR" in r.stdout
    r = subprocess.run(["pulsar2", "build", "--config", str(config_path), "--data-root", str(build_dir)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert axmodel.is_emulated(build_dir / "pulsar2" / "output" / "compiled.axmodel")
    r = subprocess.run(["pulsar2", "build", "--config", str(tmp_path / "none.json")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_path_and_target_overrides(config_path: Path, build_dir: Path) -> None:
    (build_dir / "model" / "copy.onnx").write_bytes((build_dir / "model" / "kws.onnx").read_bytes())
    assert emulate(config_path, build_dir, "--input", "/data/build/model/copy.onnx", "--output_dir", "/data/build/alt",
                   "--output_name", "kws_npu2.axmodel", "--target_hardware", "AX620E", "--npu_mode", "NPU2",
                   "--onnx_opt.disable_onnx_optimization", "true") == 0
    assert not (build_dir / "pulsar2" / "output").exists()
    meta, _ = axmodel.read_emulated(build_dir / "alt" / "kws_npu2.axmodel")
    assert meta["npu_mode"] == "NPU2"
    assert (build_dir / "alt" / "frontend" / "optimized.onnx").is_file()
