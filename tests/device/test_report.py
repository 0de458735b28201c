"""eval-npu report metrics against numbers worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from device.bench import parse_printout
from device.bundle import Label
from device.report import compute_report, render_text, write_report
from device.ssh import DeviceError

CLASSES = ["A", "B", "C"]


def test_metrics_by_hand(tmp_path):
    labels = {k: Label(k, lab, CLASSES[lab], "") for k, lab in (("0", 0), ("1", 1), ("2", 2), ("3", 2), ("4", 1))}
    onnx = {"0": [3.0, 0.0, 0.0], "1": [0.0, 2.0, 0.0], "2": [0.0, 0.0, 1.0], "3": [1.0, 0.0, 0.5], "4": [0.0, 1.0, 0.0]}
    npu = {"0": [3.0, 0.0, 0.0], "1": [0.0, 2.0, 0.5], "2": [0.0, 1.5, 1.0], "3": [1.0, 0.0, 0.5]}  # "4" failed
    state = {"0": {"npu_ms": 1.1, "wall_ms": 30}, "1": {"npu_ms": 1.5, "wall_ms": 20}, "2": {"npu_ms": 1.2, "wall_ms": 25},
             "3": {"npu_ms": 1.0, "wall_ms": 40}, "4": {"status": "fail", "error": "no complete output.bin"}}
    rep = compute_report(ids=list(labels), labels=labels, classes=CLASSES,
                         npu_logits={k: np.array(v, np.float32) for k, v in npu.items()},
                         onnx_logits={k: np.array(v, np.float32) for k, v in onnx.items()},
                         state=state, meta={"host": "h", "port": 22, "bundle_id": "x", "mode": "per-input",
                                            "emulated_axmodel": False, "board_is_emulator": False})
    assert rep["n_inputs"] == 5 and rep["n_compared"] == 4 and rep["n_failed"] == 1
    assert rep["failed"][0]["k"] == "4" and rep["failed"][0]["error"] == "no complete output.bin"
    # top-1: NPU 0,1,1,0 ; ONNX 0,1,2,0 ; labels 0,1,2,2
    assert rep["agreement"] == 0.75 and rep["npu_accuracy"] == 0.5 and rep["onnx_accuracy"] == 0.75
    # the flip is on input "2", where ONNX's top-1 p is 0.576: only "0" (p 0.909) is decided (>= 0.8)
    assert rep["n_decided"] == 1 and rep["agreement_decided"] == 1.0
    assert rep["disagreements"] == [{"k": "2", "class": "C", "npu_class": "B", "npu_prob": pytest.approx(np.exp(1.5) / (1 + np.exp(1.5) + np.exp(1.0)), abs=1e-5),
                                     "onnx_class": "C", "onnx_prob": pytest.approx(np.exp(1.0) / (2 + np.exp(1.0)), abs=1e-5)}]
    assert rep["max_abs_dlogit"] == pytest.approx(1.5)
    row1 = next(r for r in rep["inputs"] if r["k"] == "1")
    assert row1["cosine"] == pytest.approx(4.0 / (2.0 * np.sqrt(4.25)))
    per = {c["class"]: c for c in rep["per_class"]}
    assert per["C"]["n"] == 2 and per["C"]["npu_accuracy"] == 0.0 and per["C"]["onnx_accuracy"] == 0.5
    assert per["A"]["agreement"] == 1.0 and per["B"]["n"] == 1
    assert rep["confusion_npu"] == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    assert [s["k"] for s in rep["slowest"]] == ["1", "2", "0", "3"]
    assert rep["EMULATED"] is False
    text = render_text(rep)
    assert "top-1 agreement NPU vs ONNX: 0.7500" in text and "failed inputs: 1" in text and "EMULATED" not in text
    write_report(rep, tmp_path, {k: np.array(v) for k, v in npu.items()}, {k: np.array(v) for k, v in onnx.items()})
    assert json.loads((tmp_path / "report.json").read_text())["agreement"] == 0.75
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_parser_flags_consistent_and_inverted_percentiles():
    block = ("  min =   1.000 ms   max =   2.000 ms   avg =   1.200 ms  median =   1.100 ms\n"
             "   5% =   {a} ms   90% =   {b} ms   95% =   {c} ms     99% =   {d} ms\n  ----\n")
    good = parse_printout("          type: Full\n" + block.format(a="1.010", b="1.500", c="1.700", d="1.900"))
    assert good["percentiles_reliable"] is True and good["npu_mode"] == "NPU2"
    outside = parse_printout(block.format(a="0.500", b="1.500", c="1.700", d="1.900"))
    assert outside["percentiles_reliable"] is False and "outside" in outside["percentiles_note"]
    with pytest.raises(DeviceError, match="no min/max/avg"):
        parse_printout("[ERROR] Run model failed.\n")
