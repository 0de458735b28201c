"""Quantization report: the INT8 model inside the EMULATED axmodel vs the FP32 ONNX on held-back features.

Rows with ``split == "test"`` only (calibration uses ``train`` rows, design.md), so the comparison never sees
a calibration tensor. Metrics: top-1 agreement, mean output cosine, max |delta logit|, per class (by the
row's true class), plus both models' accuracy. Targets (Pulsar2's rule of thumb): agreement >= 0.99 and
cosine >= 0.98; the report says met or MISSED and does not fail the build. A REAL axmodel cannot run on
x86, so for one the report says so instead of failing.

    python -m pulsar2.quant_report --axmodel build/pulsar2/output/compiled.axmodel --onnx build/model/kws.onnx \\
        --features build/features --out build/reports/quant_report.json
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.features import FeatureSet
from pipeline.core.cli import die, run_main, setup_logging
from pipeline.core.detector import DECIDED_PROB
from pipeline.core.io import atomic_write_json, sha256_file
from pipeline.core.provenance import manifest
from pipeline.core.workers import cpu_session
from pipeline.model.infer import OnnxModel
from pulsar2 import axmodel

log = logging.getLogger(__name__)

TARGET_AGREEMENT = 0.99
TARGET_COSINE = 0.98
SPLIT = "test"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, k) arrays (1.0 where both rows are zero)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = np.sum(a64 * b64, axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)


def compare(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Agreement / cosine / max |dlogit| overall and per true class."""
    top_f, top_q = fp32.argmax(axis=1), int8.argmax(axis=1)
    cos = cosine_rows(fp32, int8)
    dlog = np.abs(fp32 - int8).max(axis=1)

    e = np.exp(fp32 - fp32.max(axis=1, keepdims=True))
    decided = (e.max(axis=1) / e.sum(axis=1)) >= DECIDED_PROB

    def block(mask: np.ndarray) -> dict[str, Any]:
        n = int(mask.sum())
        if n == 0:
            return {"n": 0}
        d = mask & decided
        return {
            "n": n,
            "top1_agreement": float(np.mean(top_f[mask] == top_q[mask])),
            "n_decided": int(d.sum()),
            "top1_agreement_decided": float(np.mean(top_f[d] == top_q[d])) if d.any() else None,
            "mean_cosine": float(np.mean(cos[mask])),
            "min_cosine": float(np.min(cos[mask])),
            "max_abs_dlogit": float(np.max(dlog[mask])),
            "fp32_accuracy": float(np.mean(top_f[mask] == labels[mask])),
            "int8_accuracy": float(np.mean(top_q[mask] == labels[mask])),
        }

    overall = block(np.ones(len(labels), dtype=bool))
    per_class = {c: block(labels == k) for k, c in enumerate(classes)}
    return {"overall": overall, "per_class": per_class,
            "disagreements": [int(i) for i in np.flatnonzero(top_f != top_q)]}


def int8_logits(onnx_bytes: bytes, input_name: str, x: np.ndarray) -> np.ndarray:
    sess = cpu_session(onnx_bytes)
    return np.concatenate([sess.run(None, {input_name: np.ascontiguousarray(x[i:i + 1], np.float32)})[0]
                           for i in range(len(x))])


def print_table(report: dict[str, Any]) -> None:
    r = report["result"]
    print(f"Quantization report (EMULATED INT8 vs FP32 ONNX, {r['overall']['n']} held-back '{SPLIT}' tensors)")
    print(f"{'class':<14}{'n':>5}{'agree':>9}{'cosine':>9}{'min cos':>9}{'max|dl|':>9}{'acc fp32':>10}{'acc int8':>10}")
    for name, b in [*r["per_class"].items(), ("ALL", r["overall"])]:
        if b["n"] == 0:
            print(f"{name:<14}{0:>5}   (no test rows)")
            continue
        print(f"{name:<14}{b['n']:>5}{b['top1_agreement']:>9.4f}{b['mean_cosine']:>9.5f}{b['min_cosine']:>9.5f}"
              f"{b['max_abs_dlogit']:>9.4f}{b['fp32_accuracy']:>10.4f}{b['int8_accuracy']:>10.4f}")
    for t in report["targets"].values():
        value = "-" if t["value"] is None else f"{t['value']:.5f}"
        print(f"target {t['what']} >= {t['target']}: {value} -> {'met' if t['met'] else 'MISSED'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="INT8 (emulated axmodel) vs FP32 ONNX on held-back feature tensors.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--axmodel", type=Path, required=True, help="compiled.axmodel (EMULATED container, or a real one)")
    p.add_argument("--onnx", type=Path, required=True, help="the FP32 ONNX the axmodel was built from")
    p.add_argument("--features", type=Path, required=True, help="features folder (features.npy + index.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="report JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if not args.axmodel.is_file():
        die(f"{args.axmodel}: axmodel not found; build it with `make axmodel`")
    inputs = [args.axmodel, args.onnx]
    if not axmodel.is_emulated(args.axmodel):
        report = manifest("pulsar2.quant_report", inputs=[args.axmodel], extra={
            "emulated": False, "status": "not run",
            "reason": "a real Pulsar2 axmodel runs only on the AX630C NPU; compare on the board "
                      "(invoke eval-npu) or with `pulsar2 run` inside the vendor image",
            "targets": {"top1_agreement_decided": TARGET_AGREEMENT, "mean_cosine": TARGET_COSINE}})
        atomic_write_json(args.out, report)
        print(f"{args.axmodel} is a REAL axmodel: it cannot run on this x86 host; quantization report not computed "
              f"(wrote {args.out} saying so). Use `invoke eval-npu` on the board.")
        return 0
    try:
        meta, qbytes = axmodel.read_emulated(args.axmodel)
    except axmodel.NotEmulatedAxmodel as e:
        die(str(e))
    fp32 = OnnxModel(args.onnx)
    fs = FeatureSet.open(args.features)
    if list(fs.classes) != list(fp32.classes):
        die(f"{args.onnx}: classes {fp32.classes} differ from {args.features} classes {fs.classes}; rebuild the model")
    fp32.contract.check_compatible(fs.contract, what=f"model {args.onnx}")
    if meta.get("source_onnx_sha256") and meta["source_onnx_sha256"] != sha256_file(args.onnx):
        die(f"{args.axmodel}: built from a different ONNX than {args.onnx} (sha256 differs); rebuild with `make axmodel`")
    rows = fs.rows_in(SPLIT)
    if not rows:
        die(f"{args.features}: no rows with split == {SPLIT!r}; the report needs held-back tensors (more clips per class)")
    idx = np.asarray([r["i"] for r in rows])
    x = np.asarray(fs.x[idx], dtype=np.float32)
    labels = np.asarray([r["label"] for r in rows])
    f_logits = fp32.logits(x)
    q_logits = int8_logits(qbytes, meta["input"]["name"], x)
    result = compare(f_logits, q_logits, labels, fs.classes)
    o = result["overall"]
    decided = o["top1_agreement_decided"]
    targets = {
        "top1_agreement_decided": {
            "what": f"top-1 agreement where FP32 is decided (p >= {DECIDED_PROB:g}; {o['n_decided']} of {o['n']}; "
                    f"all: {o['top1_agreement']:.4f})",
            "target": TARGET_AGREEMENT, "value": decided, "met": decided is not None and decided >= TARGET_AGREEMENT},
        "mean_cosine": {"what": "mean output cosine", "target": TARGET_COSINE, "value": o["mean_cosine"],
                        "met": o["mean_cosine"] >= TARGET_COSINE},
    }
    report = manifest("pulsar2.quant_report", inputs=inputs + [args.features / "features.npy"], extra={
        "emulated": True,
        "status": "met" if all(t["met"] for t in targets.values()) else "MISSED",
        "compared": "INT8 QDQ ONNX inside the EMULATED axmodel (ONNX Runtime) vs FP32 ONNX",
        "split": SPLIT,
        "rows": [int(i) for i in idx],
        "classes": list(fs.classes),
        "quantization": meta.get("quantization", {}),
        "targets": targets,
        "result": result,
    })
    atomic_write_json(args.out, report)
    print_table(report)
    if report["status"] == "MISSED":
        log.warning("quantization targets MISSED (see %s)", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
