"""pipeline.stages.export: ONNX I/O and metadata, checker, parity report and gate, contract check; pipeline.model.infer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipeline.core.cli import run_main
from pipeline.core.contract import FeatureContract
from pipeline.model.infer import OnnxModel, OnnxModelError, softmax
from pipeline.stages import export as export_mod
from tests.conftest import crnn_contract

from .conftest import CLASSES, write_feature_set

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PARAMS = ROOT / "pipeline" / "params" / "models" / "crnn.toml"
EXPORT_PARAMS = ROOT / "pipeline" / "params" / "presets" / "default.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Real 98x64 features and a 1-epoch checkpoint from pipeline.stages.train."""
    from pipeline.stages.train import main as train_main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    features = write_feature_set(root / "features", per_class=30)
    rc = run_main(train_main, ["--params", str(TRAIN_PARAMS), "--features", str(features), "--out", str(root / "model"),
                               "--epochs", "1", "--batch-size", "32", "--threads", "1", "--no-progress"])
    assert rc == 0
    return features, root / "model" / "ckpt.pt"


def export(features: Path, ckpt: Path, out: Path, report: Path, *extra: str) -> int:
    return run_main(export_mod.main, ["--params", str(EXPORT_PARAMS), "--ckpt", str(ckpt), "--features", str(features),
                                      "--out", str(out), "--report", str(report), "--threads", "1", *extra])


@pytest.fixture(scope="module")
def exported(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    features, ckpt = trained
    root = tmp_path_factory.mktemp("onnx")
    assert export(features, ckpt, root / "kws.onnx", root / "reports" / "onnx_parity.json") == 0
    return root / "kws.onnx", root / "reports" / "onnx_parity.json"


def test_onnx_io_shapes_opset_and_checker(exported: tuple[Path, Path]) -> None:
    model = onnx.load(str(exported[0]))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "output"
    for vi, shape in ((inp, [1, 1, 98, 64]), (out, [1, 4])):
        dims = vi.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims)     # static: no dim_param anywhere
        assert [d.dim_value for d in dims] == shape
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ops = {n.op_type for n in model.graph.node}
    assert not ops & export_mod.DYNAMIC_SHAPE_OPS
    assert "GRU" in ops and "Conv" in ops


def test_onnx_metadata(exported: tuple[Path, Path], trained: tuple[Path, Path]) -> None:
    meta = {p.key: p.value for p in onnx.load(str(exported[0])).metadata_props}
    assert {"classes", "contract", "provenance", "model_config"} <= set(meta)
    assert json.loads(meta["classes"]) == list(CLASSES)
    assert FeatureContract.from_mapping(json.loads(meta["contract"])) == crnn_contract()
    prov = json.loads(meta["provenance"])
    assert prov["stage"] == "export" and prov["train"]["stage"] == "train"
    assert str(trained[1]) in prov["inputs"]
    assert json.loads(meta["model_config"])["n_classes"] == 4


def test_parity_report(exported: tuple[Path, Path]) -> None:
    onnx_path, report_path = exported
    r = json.loads(report_path.read_text())
    # 120 rows: 24 test + 24 val + 52 of train make the 100 asked for by the default params, test first.
    assert r["n"] == 100 and r["requested"] == 100 and r["splits"] == {"test": 24, "val": 24, "train": 52}
    assert r["pass"] is True and r["max_abs"] <= r["atol"] == 1e-4
    assert 0 <= r["mean_abs"] <= r["max_abs"]
    assert r["cosine_min"] > 0.9999 and r["cosine_mean"] >= r["cosine_min"]
    assert r["top1_agreement"] == 1.0
    assert r["input"] == {"name": "input", "shape": [1, 1, 98, 64], "dtype": "float32"}
    assert r["output"]["shape"] == [1, 4]
    assert r["op_types"]["GRU"] == 1 and "Shape" not in r["op_types"] and r["ops_outside_expected"] == []
    from pipeline.core.io import sha256_file

    assert r["onnx_sha256"] == sha256_file(onnx_path)
    assert not report_path.with_name("onnx_parity.failed.json").exists()


def test_onnx_model_round_trip(exported: tuple[Path, Path], trained: tuple[Path, Path]) -> None:
    from pipeline.audio.features import FeatureSet

    features, ckpt_path = trained
    m = OnnxModel(exported[0])
    assert m.classes == list(CLASSES) and m.contract == crnn_contract() and m.input_name == "input"
    fs = FeatureSet.open(features)
    x = np.array(fs.x[:7])
    ckpt = torch.load(ckpt_path, weights_only=True)
    model = export_mod.build_model(ckpt, ckpt_path)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    logits = m.logits(x)
    assert logits.shape == (7, 4) and logits.dtype == np.float32
    assert np.abs(logits - ref).max() < 1e-4
    p = m.probs(x)
    assert np.allclose(p.sum(1), 1.0, atol=1e-6) and np.array_equal(p.argmax(1), ref.argmax(1))
    with pytest.raises(ValueError, match="expected input"):
        m.logits(np.zeros((2, 1, 97, 64), np.float32))
    # the static batch-1 model's rows run in threads: the same logits as one thread, row for row
    assert m.static_batch == 1 and m.row_threads >= 1
    for threads in (1, 3):
        assert np.array_equal(OnnxModel(exported[0], row_threads=threads).logits(x), logits)


def test_parity_failure_leaves_no_onnx(trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    features, ckpt = trained
    out, report = tmp_path / "kws.onnx", tmp_path / "reports" / "onnx_parity.json"
    out.write_bytes(b"stale")           # a previous run's file must not survive a failed gate
    report.parent.mkdir()
    report.write_text("{}")
    real = export_mod.onnx_logits
    monkeypatch.setattr(export_mod, "onnx_logits", lambda path, x, threads: real(path, x, threads) + 1e-2)
    assert export(features, ckpt, out, report) == 2
    err = capsys.readouterr().err
    assert "parity failed" in err and "onnx_parity.failed.json" in err
    assert not out.exists() and not report.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]   # temp ONNX removed
    failed = json.loads((tmp_path / "reports" / "onnx_parity.failed.json").read_text())
    assert failed["pass"] is False and failed["max_abs"] == pytest.approx(1e-2, rel=1e-2)

    # The same inputs pass once ORT is honest again, and the stale failure report goes away.
    monkeypatch.setattr(export_mod, "onnx_logits", real)
    assert export(features, ckpt, out, report, "--parity-samples", "10") == 0
    assert out.exists() and report.exists() and not (tmp_path / "reports" / "onnx_parity.failed.json").exists()


def test_parity_stage_reports_on_the_onnx_file(exported: tuple[Path, Path], trained: tuple[Path, Path],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """make's parity target: the report of the ONNX on disk, nothing exported; a mismatch fails, the ONNX stays."""
    from pipeline.stages import parity

    features, ckpt = trained
    onnx_path, _ = exported
    files = lambda: sorted((p.name, p.read_bytes()) for p in onnx_path.parent.iterdir() if p.is_file())  # noqa: E731
    before = files()
    report = tmp_path / "reports" / "onnx_parity.json"
    args = ["--params", str(EXPORT_PARAMS), "--ckpt", str(ckpt), "--features", str(features), "--threads", "1",
            "--onnx", str(onnx_path), "--out", str(report)]
    assert run_main(parity.main, args) == 0
    r = json.loads(report.read_text())
    assert r["pass"] is True and r["n"] == 100 and r["onnx"] == str(onnx_path) and r["op_types"]["GRU"] == 1
    assert r["max_abs"] == json.loads(exported[1].read_text())["max_abs"]
    assert files() == before

    # A checkpoint whose logits differ from the ONNX's (retrained, not re-exported): the gate fails.
    real = export_mod.torch_logits
    monkeypatch.setattr(export_mod, "torch_logits", lambda model, x: real(model, x)[:, ::-1].copy())
    capsys.readouterr()
    assert run_main(parity.main, args) == 2
    err = capsys.readouterr().err
    assert "parity failed" in err and "export it again (make onnx)" in err and str(onnx_path) in err
    assert not report.exists() and report.with_name("onnx_parity.failed.json").exists()
    assert files() == before

    args[args.index("--onnx") + 1] = str(tmp_path / "none.onnx")
    assert run_main(parity.main, args) == 2
    assert "none.onnx: no such ONNX file" in capsys.readouterr().err


def test_zero_tolerance_with_perturbed_torch_fails(trained: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A PyTorch reference that differs from the exported weights breaches even a loose atol on top-1/values."""
    features, ckpt = trained
    real = export_mod.torch_logits
    monkeypatch.setattr(export_mod, "torch_logits", lambda model, x: real(model, x)[:, ::-1].copy())
    out = tmp_path / "kws.onnx"
    assert export(features, ckpt, out, tmp_path / "p.json", "--parity-samples", "10", "--parity-atol", "0") == 2
    assert not out.exists() and (tmp_path / "p.failed.json").exists()


def test_contract_mismatch_is_a_clear_error(trained: tuple[Path, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, ckpt = trained
    other = write_feature_set(tmp_path / "other", per_class=30,
                              contract=dataclasses.replace(crnn_contract(), norm_mean_db=-50.0))
    out = tmp_path / "kws.onnx"
    assert export(other, ckpt, out, tmp_path / "r.json") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(ckpt) in err and str(other / "manifest.json") in err
    assert "norm_mean_db" in err and "retrain" in err and "Traceback" not in err
    assert not out.exists()


def test_missing_checkpoint(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export(trained[0], tmp_path / "none.pt", tmp_path / "kws.onnx", tmp_path / "r.json") == 2
    assert "none.pt: checkpoint not found" in capsys.readouterr().err


def test_onnx_model_errors(tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")
    bare = tmp_path / "bare.onnx"
    from pipeline.model.crnn import CRNN, ModelConfig

    proto = export_mod.torch_to_onnx(CRNN(ModelConfig(n_classes=3)).eval(), (1, 1, 98, 64), 13)
    onnx.save(proto, str(bare))
    with pytest.raises(OnnxModelError, match="metadata_props lack"):
        OnnxModel(bare)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file")
    with pytest.raises(OnnxModelError, match="cannot load"):
        OnnxModel(garbage)


def test_softmax() -> None:
    p = softmax(np.array([[0.0, 0.0], [1000.0, 0.0]], dtype=np.float32))
    assert np.allclose(p, [[0.5, 0.5], [1.0, 0.0]]) and np.isfinite(p).all()


def test_corrupt_checkpoint(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage, not a zip or pickle")
    assert export(trained[0], bad, tmp_path / "kws.onnx", tmp_path / "r.json") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: not a readable") and err.count("\n") == 1


@pytest.mark.parametrize("module", ["pipeline.stages.train", "pipeline.stages.export"])
def test_cli_entry_point_help(module: str) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--params" in r.stdout and "--features" in r.stdout
