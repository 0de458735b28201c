"""device.decode (board outputs -> probabilities) and pipeline.stages.where (artifact listing, stdlib only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device import decode
from pipeline.core.cli import StageError, run_main
from pipeline.stages import calib, npu_inputs, where
from tests.features.conftest import CLASSES, ROOT

EIGHT = ["ACOPLAR", "CANCELAR", "CONTINUAR", "FONDO", "LEVANTADO", "PRINCIPAL", "REPETIR", "SALIR"]


def write_outputs(root: Path, logits: list[list[float]]) -> Path:
    for k, row in enumerate(logits):
        (root / str(k)).mkdir(parents=True)
        np.asarray(row, dtype="<f4").tofile(root / str(k) / "output.bin")
    return root


def test_read_logits_and_wrong_size(tmp_path: Path) -> None:
    p = tmp_path / "output.bin"
    np.arange(8, dtype="<f4").tofile(p)
    np.testing.assert_array_equal(decode.read_logits(p, 8), np.arange(8, dtype=np.float32))
    with pytest.raises(StageError, match=r"output.bin: 32 bytes, expected 16 \(= 4 bytes x 4 float32"):
        decode.read_logits(p, 4)
    p.write_bytes(b"\0" * 31)
    with pytest.raises(StageError, match="31 bytes, expected 32"):
        decode.read_logits(p, 8)


def test_decode_softmax_top1_and_order(tmp_path: Path) -> None:
    rows = [[0.0] * 8 for _ in range(11)]
    rows[0][3] = 2.0
    rows[10] = [float(v) for v in range(8)]
    out = write_outputs(tmp_path / "output", rows)
    result = decode.decode([out], EIGHT)
    assert [it["k"] for it in result["items"]] == [str(k) for k in range(11)]  # numeric order, 10 last
    p0 = result["items"][0]["probs"]
    e = np.exp(2.0)
    assert p0["FONDO"] == pytest.approx(e / (e + 7)) and p0["ACOPLAR"] == pytest.approx(1 / (e + 7))
    assert result["items"][0]["top1"] == "FONDO"
    last = result["items"][10]
    expected = np.exp(np.arange(8) - 7.0) / np.exp(np.arange(8) - 7.0).sum()
    assert [last["probs"][c] for c in EIGHT] == pytest.approx(expected.tolist(), abs=1e-12)
    assert last["top1"] == "SALIR" and sum(last["probs"].values()) == pytest.approx(1.0)


def test_decode_cli_table_json_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_outputs(tmp_path / "output", [[5.0 if j == k else 0.0 for j in range(8)] for k in range(3)])
    labels = tmp_path / "labels.csv"
    labels.write_text("k,i,path,class,label\n0,10,a.wav,ACOPLAR,0\n1,11,b.wav,CANCELAR,1\n2,12,c.wav,SALIR,7\n")
    js = tmp_path / "d.json"
    code = run_main(decode.main, [str(out), "--classes", ",".join(EIGHT), "--labels", str(labels), "--json", str(js)])
    assert code == 0
    text = capsys.readouterr().out
    assert "ACOPLAR" in text.splitlines()[1] and "accuracy 0.6667 on 3" in text
    data = json.loads(js.read_text())
    assert data["count"] == 3 and data["accuracy"] == pytest.approx(2 / 3)
    assert [it["correct"] for it in data["items"]] == [True, True, False]


def test_decode_cli_refuses_wrong_size_and_unknown_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "output.bin"
    np.zeros(4, "<f4").tofile(p)
    assert run_main(decode.main, [str(p), "--classes", ",".join(EIGHT)]) == 2
    err = capsys.readouterr().err
    assert "16 bytes, expected 32" in err and str(p) in err
    assert run_main(decode.main, [str(p)]) == 2
    assert "--classes" in capsys.readouterr().err
    assert run_main(decode.main, [str(tmp_path / "empty_dir_missing")]) == 2


def test_decode_classes_from_features(tiny_build: Path, tmp_path: Path) -> None:
    p = tmp_path / "output.bin"
    np.array([0, 0, 3, 0], "<f4").tofile(p)
    assert decode.classes_from(None, None, tiny_build / "features") == CLASSES
    result = decode.decode([p], CLASSES)
    assert result["items"][0]["top1"] == "CHARLIE"


def test_where_lists_present_and_missing(tiny_build: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    for name in ("dataset", "features"):
        (build / name).symlink_to(tiny_build / name, target_is_directory=True)
    smoke = ROOT / "pipeline" / "params" / "presets" / "smoke.toml"
    assert run_main(calib.main, ["--params", str(smoke), "--features", str(build / "features"),
                                 "--out", str(build / "calib" / "calib_kws.tar"), "--num-samples", "12"]) == 0
    assert run_main(npu_inputs.main, ["--params", str(smoke), "--features",
                                      str(build / "features"), "--out", str(build / "npu_inputs"), "--limit", "5"]) == 0
    (build / "pulsar2" / "output").mkdir(parents=True)
    (build / "pulsar2" / "output" / "compiled.axmodel").write_bytes(b"EMU")
    (build / "pulsar2" / "output" / "manifest.json").write_text(
        json.dumps({"emulated": True, "compiler": {"name": "pulsar2-emulator", "version": "0.1"}}))
    (build / "model").mkdir()
    (build / "model" / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9375, "macro_f1": 0.93, "n_test": 48}))
    (build / "reports").mkdir()
    (build / "reports" / "onnx_parity.json").write_text(
        json.dumps({"n": 100, "max_abs": 2.5e-06, "top1_agreement": 1.0, "pass": True}))
    (build / "reports" / "quant_report.json").write_text(json.dumps(
        {"emulated": True, "status": "met", "result": {"overall": {"n": 53, "top1_agreement": 1.0, "mean_cosine": 0.9991}}}))
    # run as the Makefile does, in a fresh interpreter that must not need torch/numpy: block them
    code = ("import sys; sys.modules['torch'] = sys.modules['numpy'] = None; "
            "import runpy; sys.argv = ['where', '--build', sys.argv[1]]; runpy.run_module('pipeline.stages.where', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, str(build)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("  ")}
    n = len(CLASSES) * 30
    assert f"<f4 ({n}, 1, 98, 64)" in lines[str(build / "features" / "features.npy")]
    assert "12 members" in lines[str(build / "calib" / "calib_kws.tar")]
    assert "5 input.bin, sizes [25088] bytes" in lines[str(build / "npu_inputs" / "input")]
    assert "LF only" in lines[str(build / "npu_inputs" / "list.txt")]
    assert lines[str(build / "model" / "kws.onnx")].rstrip().endswith("missing")
    assert "EMULATED" in lines[str(build / "pulsar2" / "output" / "compiled.axmodel")]
    assert "EMULATOR" in r.stdout
    assert "test_accuracy=0.9375" in lines[str(build / "model" / "metrics.json")]
    assert "PASS, n=100, max_abs=2.5e-06" in lines[str(build / "reports" / "onnx_parity.json")]
    assert "EMULATED, met, n=53, top1_agreement=1" in lines[str(build / "reports" / "quant_report.json")]
    assert "EMULATED, compiler pulsar2-emulator 0.1" in lines[str(build / "pulsar2" / "output" / "manifest.json")]
    (build / "reports" / "onnx_parity.json").write_text("{not json")
    assert "unreadable" in "\n".join(where.report(build)[0])
    (build / "npu_inputs" / "list.txt").write_bytes(b"0\r\n1\r\n")
    text = "\n".join(where.report(build)[0])
    assert "CR FOUND" in text


def test_where_imports_only_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for rel in ("pipeline/stages/where.py", "pipeline/core/io.py"):  # where.py uses pipeline.core.io's atomic write for --out
        src = (ROOT / rel).read_text()
        imported = {line.split()[1] for line in src.splitlines() if line.startswith(("import ", "from "))}
        assert {m.split(".")[0] for m in imported if m != "pipeline.core.io"} <= stdlib, rel


def test_where_out_writes_the_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "artifacts.txt"
    assert where.main(["--build", str(tmp_path / "nothing"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed and printed.startswith(f"artifacts (0 of {len(where.ARTIFACTS)} present)")
    assert printed.count("missing") == len(where.ARTIFACTS)


def test_decode_classes_from_onnx_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"classes": json.dumps(EIGHT)})
    onnx_path = tmp_path / "kws.onnx"
    onnx.save(model, str(onnx_path))
    out = write_outputs(tmp_path / "output", [[0, 0, 0, 0, 0, 0, 4.0, 0]])
    assert run_main(decode.main, [str(out), "--onnx", str(onnx_path)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["0", "REPETIR"]
    bare = tmp_path / "bare.onnx"
    onnx.save(helper.make_model(graph), str(bare))
    assert run_main(decode.main, [str(out), "--onnx", str(bare)]) == 2
    assert "no 'classes' in the ONNX metadata" in capsys.readouterr().err
