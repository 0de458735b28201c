"""Print where each build artifact is: path, size and one key fact, or ``missing``.

Standard library only: it runs on the host after ``make all`` even when the stages ran in a container and
torch/numpy are not installed here. The artifact list is docs/design.md's table.

    python -m pipeline.stages.where --build build [--out build/artifacts.txt]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.io import atomic_write_text  # stdlib-only, like this module

Fact = Callable[[Path, Path], str]


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _scalars(obj: Any, prefer: Sequence[str], limit: int = 3) -> str:
    """A few ``key=value`` pairs: the preferred keys that exist, else the first scalar ones."""
    if not isinstance(obj, dict):
        return ""
    keys = [k for k in prefer if k in obj] or [
        k for k, v in obj.items() if isinstance(v, (int, float, str, bool)) and k not in ("stage", "created_unix")
    ]
    parts = []
    for k in keys[:limit]:
        v = obj[k]
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (list, dict)) and len(json.dumps(v)) > 60:
            v = f"<{len(v)} items>"
        parts.append(f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}")
    return ", ".join(parts)


def _emulated(build: Path) -> bool | None:
    man = build / "pulsar2" / "output" / "manifest.json"
    if not man.is_file():
        return None
    data = _json(man)
    flag = data.get("emulated", data.get("EMULATED")) if isinstance(data, dict) else None
    return bool(flag) if flag is not None else None


def fact_dataset_manifest(p: Path, b: Path) -> str:
    m = _json(p)
    classes = m.get("classes", [])
    out = f"{len(classes)} classes"
    if m.get("background_class"):
        out += f", background {m['background_class']}"
    counts = m.get("counts")
    if isinstance(counts, dict) and counts and all(isinstance(v, int) for v in counts.values()):
        out += f", {sum(counts.values())} clips"
    return out


def fact_npy(p: Path, b: Path) -> str:
    with p.open("rb") as f:
        if f.read(6) != b"\x93NUMPY":
            return "not an .npy file"
        major = f.read(2)[0]
        n = int.from_bytes(f.read(2 if major == 1 else 4), "little")
        header = ast.literal_eval(f.read(n).decode("latin1"))
    return f"{header['descr']} {tuple(header['shape'])}"


def fact_lines(what: str) -> Fact:
    return lambda p, b: f"{_lines(p)} {what}"


def fact_features_manifest(p: Path, b: Path) -> str:
    m = _json(p)
    return f"splits {json.dumps(m.get('split_counts'))}, {len(m.get('classes', []))} classes"


def fact_metrics(p: Path, b: Path) -> str:
    return _scalars(_json(p), ["test_accuracy", "macro_f1", "n_test", "best_epoch"], limit=4)


def fact_parity(p: Path, b: Path) -> str:
    m = _json(p)
    verdict = {True: "PASS", False: "FAIL"}.get(m.get("pass"), "")
    return ", ".join(x for x in [verdict, _scalars(m, ["n", "max_abs", "top1_agreement"])] if x)


def fact_quant(p: Path, b: Path) -> str:
    m = _json(p)
    overall = (m.get("result") or {}).get("overall") or {}
    head = ("EMULATED, " if m.get("emulated") else "") + str(m.get("status", ""))
    return ", ".join(x for x in [head, _scalars(overall, ["n", "top1_agreement", "mean_cosine"])] if x)


def fact_csv_rows(what: str) -> Fact:
    return lambda p, b: f"{max(0, _lines(p) - 1)} {what}"


def fact_generic(*prefer: str) -> Fact:
    return lambda p, b: _scalars(_json(p), prefer)


def fact_tar(p: Path, b: Path) -> str:
    with tarfile.open(p) as t:
        names = t.getnames()
    return f"{len(names)} members" + (f" ({names[0]} …)" if names else "")


def fact_inputs(p: Path, b: Path) -> str:
    bins = list(p.glob("*/input.bin"))
    sizes = {f.stat().st_size for f in bins}
    return f"{len(bins)} input.bin, sizes {sorted(sizes)} bytes"


def fact_list_txt(p: Path, b: Path) -> str:
    data = p.read_bytes()
    return f"{_lines(p)} lines, " + ("CR FOUND (ax_run_model needs LF only)" if b"\r" in data else "LF only")


def fact_p2_config(p: Path, b: Path) -> str:
    return _scalars(_json(p), ["target_hardware", "npu_mode", "output_name"])


def fact_axmodel(p: Path, b: Path) -> str:
    emulated = _emulated(b)
    if emulated is None:
        return "no pulsar2/output/manifest.json"
    return "EMULATED (pulsar2 emulator, not for the board)" if emulated else "real Pulsar2 build"


def fact_p2_manifest(p: Path, b: Path) -> str:
    m = _json(p)
    comp = m.get("compiler")
    comp = f"{comp.get('name', '')} {comp.get('version', '')}".strip() if isinstance(comp, dict) else comp
    parts = ["EMULATED" if m.get("emulated", m.get("EMULATED")) else "real", f"compiler {comp}" if comp else ""]
    return ", ".join(x for x in parts if x)


def fact_none(p: Path, b: Path) -> str:
    return ""


# (path under BUILD, fact) in docs/design.md order
ARTIFACTS: list[tuple[str, Fact]] = [
    ("dataset/clips.jsonl", fact_lines("clips")),
    ("dataset/manifest.json", fact_dataset_manifest),
    ("features/features.npy", fact_npy),
    ("features/index.jsonl", fact_lines("rows")),
    ("features/manifest.json", fact_features_manifest),
    ("model/ckpt.pt", fact_none),
    ("model/metrics.json", fact_metrics),
    ("model/train_log.csv", fact_csv_rows("epochs")),
    ("model/confusion.txt", fact_none),
    ("model/confusion.png", fact_none),
    ("model/kws.onnx", fact_none),
    ("reports/onnx_parity.json", fact_parity),
    ("calib/calib_kws.tar", fact_tar),
    ("calib/manifest.json", fact_generic("count", "class_counts")),
    ("npu_inputs/input", fact_inputs),
    ("npu_inputs/list.txt", fact_list_txt),
    ("npu_inputs/labels.csv", fact_csv_rows("rows")),
    ("npu_inputs/manifest.json", fact_generic("count", "input_bytes")),
    ("pulsar2/kws_build_int8_config.json", fact_p2_config),
    ("pulsar2/output/compiled.axmodel", fact_axmodel),
    ("pulsar2/output/build.log", fact_lines("lines")),
    ("pulsar2/output/manifest.json", fact_p2_manifest),
    ("reports/quant_report.json", fact_quant),
    ("detector/settings.json", fact_generic("model")),
    ("runtime/runtime.json", fact_generic("detector_source")),
]


def human_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def size_of(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def report(build: Path) -> tuple[list[str], int]:
    """Lines to print and the number of artifacts present."""
    width = max(len(str(build / rel)) for rel, _ in ARTIFACTS)
    lines, present = [], 0
    for rel, fact in ARTIFACTS:
        p = build / rel
        if not p.exists():
            lines.append(f"  {p!s:<{width}}  {'missing':>9}")
            continue
        present += 1
        try:
            info = fact(p, build)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SyntaxError, tarfile.TarError) as e:
            info = f"unreadable ({type(e).__name__}: {e})"
        lines.append(f"  {p!s:<{width}}  {human_size(size_of(p)):>9}  {info}".rstrip())
    return lines, present


# The stage records that carry what the stage cost (pipeline.core.provenance.resources), in make's order.
STAGE_RECORDS: list[tuple[str, str]] = [
    ("voices", "voices/manifest.json"), ("dataset", "dataset/manifest.json"), ("features", "features/manifest.json"),
    ("embeddings", "embeddings/manifest.json"), ("train", "model/metrics.json"), ("parity", "reports/onnx_parity.json"),
    ("calib", "calib/manifest.json"), ("axmodel", "pulsar2/output/manifest.json"),
    ("quant-report", "reports/quant_report.json"), ("npu-inputs", "npu_inputs/manifest.json"),
    ("holdout-dev", "holdout-dev/manifest.json"), ("detector", "detector/settings.json"),
]


def _resources_of(doc: Any) -> dict[str, Any] | None:
    if not isinstance(doc, dict):
        return None
    found = doc.get("resources")
    if isinstance(found, dict):
        return found
    for value in doc.values():
        if isinstance(value, dict) and isinstance(value.get("resources"), dict):
            return value["resources"]
    return None


def stage_table(build: Path) -> list[str]:
    """Wall and CPU seconds and peak memory per stage, from the stage records; [] if none has them."""
    rows = []
    for stage, rel in STAGE_RECORDS:
        try:
            res = _resources_of(_json(build / rel))
        except (OSError, ValueError):
            continue
        if res:
            peak = max(res.get("peak_rss_mb") or 0, res.get("children_peak_rss_mb") or 0)
            wall = res.get("wall_s")
            rows.append((stage, "-" if wall is None else f"{wall:.1f}", f"{res.get('cpu_s', 0):.1f}", f"{peak:.0f}"))
    if not rows:
        return []
    lines = [f"  {'stage':<14}{'wall s':>9}{'CPU s':>9}{'peak MB':>9}"]
    lines += [f"  {st:<14}{w:>9}{c:>9}{m:>9}" for st, w, c, m in rows]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=Path("build"), help="the BUILD folder")
    parser.add_argument("--out", type=Path, help="also write the listing here (the artifact index make all ends with)")
    args = parser.parse_args(argv)
    lines, present = report(args.build)
    text = f"artifacts ({present} of {len(ARTIFACTS)} present):\n" + "\n".join(lines) + "\n"
    table = stage_table(args.build)
    if table:
        text += "stage costs (from the stage records; a stage that did not rerun keeps its old figures):\n"
        text += "\n".join(table) + "\n"
    if _emulated(args.build):
        text += "NOTE: the axmodel was made by the Pulsar2 EMULATOR (no Pulsar2 image); it will not run on a board.\n"
    print(text, end="")
    if args.out is not None:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    # Not pipeline.core.cli.run_main: that module needs jsonschema, and this one must run with the stdlib alone.
    sys.exit(main())
