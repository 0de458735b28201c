"""pulsar2.quant_report: emulated INT8 vs FP32 on test rows only; a real axmodel gets a 'not run' report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.cli import run_main
from pulsar2 import quant_report
from pulsar2.emulator.cli import main as emulator_main
from tests.pulsar2.pulsar2_fixtures import CLASSES, write_features


def report_argv(build_dir: Path, axm: Path) -> list[str]:
    return ["--axmodel", str(axm), "--onnx", str(build_dir / "model" / "kws.onnx"),
            "--features", str(build_dir / "features"), "--out", str(build_dir / "reports" / "quant_report.json")]


def test_compare_metrics_by_hand() -> None:
    fp32 = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    int8 = np.array([[2.0, 0.1], [0.6, 0.5], [1.0, 0.0], [0.0, 3.0]])
    labels = np.array([0, 1, 0, 1])
    r = quant_report.compare(fp32, int8, labels, ["A", "B"])
    assert r["overall"]["top1_agreement"] == pytest.approx(0.75)
    assert r["overall"]["max_abs_dlogit"] == pytest.approx(0.6)
    assert r["disagreements"] == [1]
    # the flip (row 1) is where FP32 is undecided (p 0.73 < 0.8); rows 0 and 3 are decided and agree
    assert r["overall"]["n_decided"] == 2 and r["overall"]["top1_agreement_decided"] == 1.0
    assert r["per_class"]["A"]["top1_agreement"] == 1.0 and r["per_class"]["B"]["top1_agreement"] == 0.5
    assert r["per_class"]["B"]["int8_accuracy"] == 0.5 and r["per_class"]["B"]["fp32_accuracy"] == 1.0
    cos_row1 = (0.5) / (1.0 * np.hypot(0.6, 0.5))
    assert r["per_class"]["B"]["min_cosine"] == pytest.approx(cos_row1)
    assert r["overall"]["mean_cosine"] == pytest.approx((quant_report.cosine_rows(fp32, int8)).mean())


def test_report_on_the_emulated_axmodel(config_path: Path, build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(emulator_main, ["build", "--config", str(config_path), "--data-root", str(build_dir)]) == 0
    write_features(build_dir / "features")
    capsys.readouterr()
    axm = build_dir / "pulsar2" / "output" / "compiled.axmodel"
    assert run_main(quant_report.main, report_argv(build_dir, axm)) == 0
    rep = json.loads((build_dir / "reports" / "quant_report.json").read_text(encoding="utf-8"))
    index = [json.loads(line) for line in (build_dir / "features" / "index.jsonl").read_text().splitlines()]
    test_rows = [r["i"] for r in index if r["split"] == "test"]
    assert rep["rows"] == test_rows and rep["split"] == "test"
    assert rep["emulated"] is True
    o = rep["result"]["overall"]
    assert o["n"] == len(test_rows) == 20
    assert set(rep["result"]["per_class"]) == set(CLASSES)
    assert sum(b["n"] for b in rep["result"]["per_class"].values()) == o["n"]
    assert 0.0 <= o["top1_agreement"] <= 1.0 and o["max_abs_dlogit"] > 0.0
    decided = o["top1_agreement_decided"]
    assert rep["targets"]["top1_agreement_decided"]["met"] == (decided is not None and decided >= 0.99)
    assert rep["status"] == ("met" if rep["targets"]["top1_agreement_decided"]["met"] and o["mean_cosine"] >= 0.98
                             else "MISSED")
    printed = capsys.readouterr().out
    assert "ALL" in printed and "target top-1 agreement where FP32 is decided" in printed


def test_report_for_a_real_axmodel_says_it_cannot_run(build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    axm = build_dir / "pulsar2" / "output" / "compiled.axmodel"
    axm.parent.mkdir(parents=True)
    axm.write_bytes(b"\x00REAL-AXMODEL" * 10)
    assert run_main(quant_report.main, report_argv(build_dir, axm)) == 0
    rep = json.loads((build_dir / "reports" / "quant_report.json").read_text(encoding="utf-8"))
    assert rep["emulated"] is False and rep["status"] == "not run" and "NPU" in rep["reason"]
    assert "REAL axmodel" in capsys.readouterr().out


def test_report_refuses_an_axmodel_from_another_onnx(config_path: Path, build_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(emulator_main, ["build", "--config", str(config_path), "--data-root", str(build_dir)]) == 0
    write_features(build_dir / "features")
    onnx_path = build_dir / "model" / "kws.onnx"
    import onnx

    m = onnx.load(str(onnx_path))
    m.doc_string = "changed"
    onnx.save(m, str(onnx_path))
    assert run_main(quant_report.main, report_argv(build_dir, build_dir / "pulsar2" / "output" / "compiled.axmodel")) == 2
    assert "different ONNX" in capsys.readouterr().err
    assert not (build_dir / "reports" / "quant_report.json").exists()
