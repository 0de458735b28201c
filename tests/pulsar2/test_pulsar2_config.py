"""pulsar2.config: container paths, seed defaults, options from params, validation before writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pulsar2 import config
from pulsar2.schema import validate_config
from tests.pulsar2.pulsar2_fixtures import calib_tar, npy_bytes, write_tar

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = ROOT / "pipeline" / "params" / "presets" / "default.toml"


def run(build_dir: Path, *extra: str, params: Path = DEFAULT_PARAMS, calib: Path | None = None) -> tuple[int, Path]:
    out = build_dir / "pulsar2" / "kws_build_int8_config.json"
    argv = ["--params", str(params), "--onnx", str(build_dir / "model" / "kws.onnx"),
            "--calib", str(calib or build_dir / "calib" / "calib_kws.tar"), "--build", str(build_dir), "--out", str(out), *extra]
    from pipeline.core.cli import run_main

    return run_main(config.main, argv), out


def test_default_config_is_the_seed_build_with_container_paths(config_path: Path, build_dir: Path) -> None:
    text = config_path.read_text(encoding="utf-8")
    cfg = json.loads(text)
    assert validate_config(cfg) == []
    assert str(build_dir) not in text and str(build_dir.parent) not in text, "host path leaked into the config"
    assert cfg["input"] == "/data/build/model/kws.onnx"
    assert cfg["output_dir"] == "/data/build/pulsar2/output"
    assert cfg["output_name"] == "compiled.axmodel"
    assert (cfg["target_hardware"], cfg["npu_mode"], cfg["model_type"]) == ("AX620E", "NPU1", "ONNX")
    assert cfg["input_shapes"] == "input:1x1x98x64"
    (ic,) = cfg["quant"]["input_configs"]
    assert ic["tensor_name"] == "input"
    assert ic["calibration_dataset"] == "/data/build/calib/calib_kws.tar"
    assert (ic["calibration_format"], ic["calibration_size"]) == ("Numpy", -1)
    assert cfg["quant"]["calibration_method"] == "MinMax"
    assert cfg["quant"]["precision_analysis"] is False
    assert "layer_configs" not in cfg["quant"]
    assert cfg["compiler"]["check"] == 0
    assert [p["tensor_name"] for p in cfg["input_processors"]] == ["input"]
    assert [p["tensor_name"] for p in cfg["output_processors"]] == ["output"]
    assert text.endswith("}\n") and "\r" not in text


def test_options_npu2_method_size_u16_precision(build_dir: Path) -> None:
    rc, out = run(build_dir, "--npu-mode", "NPU2", "--calibration-method", "KL", "--calibration-size", "8",
                  "--u16-layers", "Conv", "/8/Gemm", "--precision-analysis")
    assert rc == 0
    cfg = json.loads(out.read_text(encoding="utf-8"))
    assert validate_config(cfg) == []
    assert cfg["npu_mode"] == "NPU2"
    assert cfg["quant"]["calibration_method"] == "KL"
    assert cfg["quant"]["input_configs"][0]["calibration_size"] == 8
    assert cfg["quant"]["precision_analysis"] is True
    assert {"layer_names": ["/8/Gemm"], "data_type": "U16"} in cfg["quant"]["layer_configs"]
    assert {"op_types": ["Conv"], "data_type": "U16"} in cfg["quant"]["layer_configs"]


def test_params_file_sets_options_and_is_validated(build_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tmp_path / "pulsar2.toml"
    params.write_text('[pulsar2]\nnpu_mode = "NPU2"\nu16_layers = ["DEFAULT"]\n', encoding="utf-8")
    rc, out = run(build_dir, params=params)
    assert rc == 0
    cfg = json.loads(out.read_text(encoding="utf-8"))
    assert cfg["npu_mode"] == "NPU2"
    assert cfg["quant"]["layer_configs"] == [{"start_tensor_names": ["DEFAULT"], "end_tensor_names": ["DEFAULT"],
                                              "data_type": "U16"}]
    out.unlink()
    params.write_text('[pulsar2]\nnpu_mode = "NPU3"\n', encoding="utf-8")  # an AX650 mode on the AX620E
    rc, out = run(build_dir, params=params)
    assert rc == 2 and not out.exists()
    assert "npu_mode" in capsys.readouterr().err


def test_the_ax650_preset_builds_an_ax650_config(build_dir: Path) -> None:
    from tests.conftest import ROOT

    rc, out = run(build_dir, params=ROOT / "pipeline" / "params" / "presets" / "ax650.toml")
    assert rc == 0
    cfg = json.loads(out.read_text(encoding="utf-8"))
    assert (cfg["target_hardware"], cfg["npu_mode"]) == ("AX650", "NPU3") and validate_config(cfg) == []


def test_unknown_u16_layer_is_an_error(build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run(build_dir, "--u16-layers", "LSTM")
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "LSTM" in err and "neither node names nor op types" in err


@pytest.mark.parametrize("case", ["wrong_shape", "float64", "empty", "not_a_tar", "missing"])
def test_bad_calibration_tar_writes_nothing(build_dir: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    tar = build_dir / "calib" / "bad.tar"
    if case == "wrong_shape":
        calib_tar(tar, [np.zeros((1, 1, 97, 64), np.float32)] * 3)
    elif case == "float64":
        calib_tar(tar, [np.zeros((1, 1, 98, 64), np.float64)] * 3)
    elif case == "empty":
        write_tar(tar, {"README.txt": b"no arrays"})
    elif case == "not_a_tar":
        tar.write_bytes(b"this is not an archive\n" * 40)
    rc, out = run(build_dir, calib=tar)
    assert rc == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    expected = {"wrong_shape": "shape (1, 1, 97, 64), expected (1, 1, 98, 64)", "float64": "dtype float64",
                "empty": "no .npy files", "not_a_tar": "not a readable tar", "missing": "not found"}[case]
    assert expected in err


def test_existing_config_is_not_replaced_by_a_failed_run(config_path: Path, build_dir: Path) -> None:
    before = config_path.read_bytes()
    tar = build_dir / "calib" / "bad.tar"
    calib_tar(tar, [np.zeros((1, 1, 98, 64), np.float16)])
    rc, _ = run(build_dir, "--npu-mode", "NPU2", calib=tar)
    assert rc == 2
    assert config_path.read_bytes() == before


def test_paths_outside_the_mounted_build_dir_are_refused(build_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "elsewhere.tar"
    calib_tar(outside, [np.zeros((1, 1, 98, 64), np.float32)])
    rc, out = run(build_dir, calib=outside)
    assert rc == 2 and not out.exists()
    assert "inside the build directory" in capsys.readouterr().err


def test_calibration_under_tensor_folder_is_accepted(build_dir: Path) -> None:
    tar = build_dir / "calib" / "nested.tar"
    write_tar(tar, {f"input/{i:05d}.npy": npy_bytes(np.zeros((1, 1, 98, 64), np.float32)) for i in range(3)})
    rc, out = run(build_dir, calib=tar)
    assert rc == 0
    assert json.loads(out.read_text())["quant"]["input_configs"][0]["calibration_dataset"] == "/data/build/calib/nested.tar"
