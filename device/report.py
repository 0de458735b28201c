"""The eval-npu report: NPU (board) logits vs ONNX Runtime (host) logits vs labels.

``compute_report`` returns a JSON-able dict: top-1 agreement NPU vs ONNX, accuracy of each against the
labels, a per-class table, per-input max |Δlogit| and cosine, the slowest inputs, the inputs whose top-1
differs and the inputs whose board run failed. ``write_report`` writes ``report.json``, ``report.txt``
and ``report.png`` (logit scatter + NPU confusion matrix) atomically into the run folder.

Example::

    python -c "import json; print(json.load(open('build/device/127.0.0.1_2222/<bundle>/per-input/report.json'))['agreement'])"
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from device.bundle import Label
from pipeline.core.detector import DECIDED_PROB
from pipeline.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from pipeline.model.infer import softmax

N_SLOWEST = 10


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def compute_report(
    ids: Sequence[str], labels: Mapping[str, Label], classes: Sequence[str], npu_logits: Mapping[str, np.ndarray],
    onnx_logits: Mapping[str, np.ndarray], state: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any],
) -> dict[str, Any]:
    n_cls = len(classes)
    rows, failed = [], []
    confusion = np.zeros((n_cls, n_cls), dtype=int)  # [true label, NPU top-1]
    for k in ids:
        st = dict(state.get(k, {}))
        if k not in npu_logits:
            failed.append({"k": k, "error": st.get("error", "not run yet (re-run eval-npu)"),
                           "log_tail": st.get("log_tail", "")})
            continue
        a = np.asarray(npu_logits[k], dtype=np.float64).reshape(-1)
        b = np.asarray(onnx_logits[k], dtype=np.float64).reshape(-1)
        if a.size != n_cls:
            failed.append({"k": k, "error": f"output.bin has {a.size} values, expected {n_cls}"})
            continue
        pa, pb = softmax(a), softmax(b)
        lab = labels[k]
        ta, tb = int(np.argmax(a)), int(np.argmax(b))
        confusion[lab.label, ta] += 1
        rows.append({
            "k": k, "label": lab.label, "class": lab.cls, "npu_top1": ta, "onnx_top1": tb,
            "npu_class": classes[ta], "onnx_class": classes[tb],
            "npu_prob": round(float(pa[ta]), 6), "onnx_prob": round(float(pb[tb]), 6),
            "max_abs_dlogit": float(np.max(np.abs(a - b))), "cosine": _cosine(a, b),
            "wall_ms": st.get("wall_ms"), "npu_ms": st.get("npu_ms"),
        })
    n = len(rows)
    agree = sum(r["npu_top1"] == r["onnx_top1"] for r in rows)
    decided = [r for r in rows if r["onnx_prob"] >= DECIDED_PROB]
    agree_decided = sum(r["npu_top1"] == r["onnx_top1"] for r in decided)
    npu_ok = sum(r["npu_top1"] == r["label"] for r in rows)
    onnx_ok = sum(r["onnx_top1"] == r["label"] for r in rows)
    per_class = []
    for c, name in enumerate(classes):
        rc = [r for r in rows if r["label"] == c]
        per_class.append({
            "class": name, "n": len(rc),
            "npu_accuracy": _ratio(sum(r["npu_top1"] == c for r in rc), len(rc)),
            "onnx_accuracy": _ratio(sum(r["onnx_top1"] == c for r in rc), len(rc)),
            "agreement": _ratio(sum(r["npu_top1"] == r["onnx_top1"] for r in rc), len(rc)),
        })
    timed = [r for r in rows if (r["npu_ms"] if r["npu_ms"] is not None else r["wall_ms"]) is not None]
    timed.sort(key=lambda r: (r["npu_ms"] if r["npu_ms"] is not None else -1, r["wall_ms"] or -1), reverse=True)
    dl = [r["max_abs_dlogit"] for r in rows]
    cs = [r["cosine"] for r in rows]
    return {
        **dict(meta),
        "EMULATED": bool(meta.get("emulated_axmodel") or meta.get("board_is_emulator")),
        "classes": list(classes),
        "n_inputs": len(ids), "n_compared": n, "n_failed": len(failed),
        "agreement": _ratio(agree, n), "npu_accuracy": _ratio(npu_ok, n), "onnx_accuracy": _ratio(onnx_ok, n),
        "decided_prob": DECIDED_PROB, "n_decided": len(decided),
        "agreement_decided": _ratio(agree_decided, len(decided)),
        "max_abs_dlogit": max(dl) if dl else None, "mean_max_abs_dlogit": float(np.mean(dl)) if dl else None,
        "min_cosine": min(cs) if cs else None, "mean_cosine": float(np.mean(cs)) if cs else None,
        "per_class": per_class,
        "confusion_npu": confusion.tolist(),
        "slowest": [{"k": r["k"], "npu_ms": r["npu_ms"], "wall_ms": r["wall_ms"]} for r in timed[:N_SLOWEST]],
        "disagreements": [{k: r[k] for k in ("k", "class", "npu_class", "npu_prob", "onnx_class", "onnx_prob")}
                          for r in rows if r["npu_top1"] != r["onnx_top1"]],
        "failed": failed,
        "inputs": rows,
    }


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def render_text(rep: Mapping[str, Any]) -> str:
    emu = " [EMULATED]" if rep.get("EMULATED") else ""
    lines = [
        f"eval-npu report{emu}: {rep['host']}:{rep['port']} bundle {rep['bundle_id']} mode {rep['mode']}",
        f"  axmodel emulated: {rep['emulated_axmodel']}   board is the emulator: {rep['board_is_emulator']}",
        f"  inputs {rep['n_inputs']}   compared {rep['n_compared']}   failed {rep['n_failed']}",
        f"  top-1 agreement NPU vs ONNX: {_fmt(rep['agreement'])}   on the {rep.get('n_decided', '-')} inputs the host "
        f"is decided about (FP32 top-1 p >= {rep.get('decided_prob', DECIDED_PROB):g}): {_fmt(rep.get('agreement_decided'))}",
        f"  accuracy vs labels: NPU {_fmt(rep['npu_accuracy'])}   ONNX {_fmt(rep['onnx_accuracy'])}",
        (f"  max |dlogit| {_fmt(rep['max_abs_dlogit'], '.5f')} (mean {_fmt(rep['mean_max_abs_dlogit'], '.5f')})   "
         f"cosine min {_fmt(rep['min_cosine'], '.6f')} (mean {_fmt(rep['mean_cosine'], '.6f')})"),
    ]
    if rep.get("batch_wall_ms") is not None and rep["mode"] == "batch":
        lines.append(f"  batch call wall time: {rep['batch_wall_ms']} ms (per-input times are not available in batch mode)")
    lines += ["", f"  {'class':<14}{'n':>5}{'NPU acc':>10}{'ONNX acc':>10}{'agree':>8}"]
    for c in rep["per_class"]:
        lines.append(f"  {c['class']:<14}{c['n']:>5}{_fmt(c['npu_accuracy'], '.3f'):>10}"
                     f"{_fmt(c['onnx_accuracy'], '.3f'):>10}{_fmt(c['agreement'], '.3f'):>8}")
    if rep["slowest"]:
        lines += ["", "  slowest inputs (NPU ms from the tool's printout / wall ms incl. process start):"]
        lines += [f"    {s['k']:>6}  {_fmt(s['npu_ms'], '.3f'):>9} ms  {s['wall_ms'] if s['wall_ms'] is not None else '-':>7} ms"
                  for s in rep["slowest"]]
    lines += ["", f"  inputs whose top-1 differs: {len(rep['disagreements'])}"]
    lines += [f"    {d['k']:>6}  {d['class']:<12} NPU {d['npu_class']} ({d['npu_prob']:.3f})  "
              f"ONNX {d['onnx_class']} ({d['onnx_prob']:.3f})" for d in rep["disagreements"]]
    lines += ["", f"  failed inputs: {len(rep['failed'])}"]
    lines += [f"    {f['k']:>6}  {f['error']}" for f in rep["failed"]]
    return "\n".join(lines) + "\n"


def render_png(rep: Mapping[str, Any], npu_flat: np.ndarray, onnx_flat: np.ndarray) -> bytes:
    """Left: every NPU logit against its ONNX logit (on the diagonal when they agree). Right: NPU confusion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5))
    if npu_flat.size:
        ax1.scatter(onnx_flat, npu_flat, s=6, alpha=0.5)
        lo, hi = float(min(npu_flat.min(), onnx_flat.min())), float(max(npu_flat.max(), onnx_flat.max()))
        ax1.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax1.set_xlabel("ONNX Runtime logit (host)")
    ax1.set_ylabel("NPU logit (board)" + (" [EMULATED]" if rep.get("EMULATED") else ""))
    ax1.set_title(f"logits, {rep['n_compared']} inputs, max |d| {_fmt(rep['max_abs_dlogit'], '.4f')}")
    cm = np.asarray(rep["confusion_npu"])
    ax2.imshow(cm, cmap="Blues")
    ax2.set_xticks(range(len(rep["classes"])), rep["classes"], rotation=60, ha="right", fontsize=7)
    ax2.set_yticks(range(len(rep["classes"])), rep["classes"], fontsize=7)
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax2.text(j, i, str(v), ha="center", va="center", fontsize=7)
    ax2.set_xlabel("NPU top-1")
    ax2.set_ylabel("label")
    ax2.set_title(f"NPU confusion, acc {_fmt(rep['npu_accuracy'], '.3f')}, agree {_fmt(rep['agreement'], '.3f')}")
    fig.suptitle(f"eval-npu {rep['host']}:{rep['port']} {rep['mode']}" + (" - EMULATED" if rep.get("EMULATED") else ""))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(rep: dict[str, Any], out_dir: Path, npu_logits: Mapping[str, np.ndarray],
                 onnx_logits: Mapping[str, np.ndarray]) -> None:
    """report.txt, report.png, then report.json (last: its presence means the report is complete)."""
    ks = [r["k"] for r in rep["inputs"]]
    npu_flat = np.concatenate([np.ravel(npu_logits[k]) for k in ks]) if ks else np.zeros(0)
    onnx_flat = np.concatenate([np.ravel(onnx_logits[k]) for k in ks]) if ks else np.zeros(0)
    atomic_write_text(out_dir / "report.txt", render_text(rep))
    atomic_write_bytes(out_dir / "report.png", render_png(rep, npu_flat, onnx_flat))
    atomic_write_json(out_dir / "report.json", rep)
