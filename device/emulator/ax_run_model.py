#!/usr/bin/env python3
"""ax_run_model BOARD EMULATOR: the AX630C board's model runner, imitated with ONNX Runtime on a CPU.

It accepts the documented flags of Axera's ``ax_run_model`` (``-m -r -w -a -v -b -i -o -l --verify``
``--inputs-is-folder --outputs-is-folder --use-tensor-name --save-benchmark``), reads the same layout
(``<input root>/<set>/<tensor>.bin`` -> ``<output root>/<set>/<tensor>.bin``), prints the same text
(``type: Half`` for NPU1 models, ``Full`` for NPU2, the version lines, the min/max/avg block with the
board's oddly labelled percentiles, the list-mode lines) and reproduces the list quirk: an entry that
still ends in ``\\r`` (a CRLF list) names no folder and is skipped with the board's line, whose raw
``  {0\\r} does not has …`` a terminal shows as ``} does not has input folder {…}, skipped.``.

It runs only EMULATED axmodels (``pulsar2.axmodel``, the container the project's Pulsar2 emulator
writes) and refuses a real axmodel with a clear message. Every banner says EMULATOR.

Needs python3 + numpy + onnxruntime and ``axmodel.py`` (a copy of ``pulsar2/axmodel.py``, stdlib only)
beside this file; in the repository it falls back to ``pulsar2.axmodel``.
Set ``AX_EMULATOR_CALL_LOG=FILE`` to append one line ``<pid> <set>`` per inferred input set.

Example::

    ax_run_model -m /opt/kws/current/model/compiled.axmodel -i /opt/kws/current/input/ \\
        -o /tmp/out/ -l /opt/kws/current/list.txt
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

EMULATOR_VERSION = "1.0"
TOOL_VERSION = "2.3.3sp"  # the version the M5Stack LLM Kit reports; the emulator imitates that release
RULE = "  " + "-" * 75


def _load_axmodel_module():
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    try:
        import axmodel  # the copy installed beside this file (board-emulator image)
    except ImportError:
        sys.path[0] = str(here.parent.parent)  # repository checkout: device/emulator/ -> repo root
        from pulsar2 import axmodel
    return axmodel


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ax_run_model",
        description=f"ax_run_model BOARD EMULATOR {EMULATOR_VERSION} (imitates tool ver {TOOL_VERSION}): runs "
        "EMULATED axmodels with ONNX Runtime on the CPU. Not an NPU; timings are CPU timings.",
    )
    p.add_argument("-m", "--model", required=True, help="model path")
    p.add_argument("-r", "--repeat", type=int, default=1, help="timed runs (min/max/avg)")
    p.add_argument("-w", "--warmup", type=int, default=1, help="warm-up runs")
    p.add_argument("-a", "--affinity", type=int, default=1, help="NPU affinity mask (recorded only)")
    p.add_argument("-v", "--vnpu", type=int, default=0, choices=[0, 1, 2], help="0=Disable, 1=STD, 2=BigLittle")
    p.add_argument("-b", "--batch", type=int, default=0, help="batch (0 = auto)")
    p.add_argument("-i", "--input-folder", default="", help="root with one sub-folder per input set")
    p.add_argument("-o", "--output-folder", default="", help="root for one output sub-folder per input set")
    p.add_argument("-l", "--list", default="", help="list file: one input-set folder name per line")
    p.add_argument("--inputs-is-folder", action="store_true", help="accepted (default behaviour)")
    p.add_argument("--outputs-is-folder", action="store_true", help="accepted (default behaviour)")
    p.add_argument("--use-tensor-name", action="store_true", help="accepted (default behaviour)")
    p.add_argument("--verify", action="store_true", help="compare outputs byte by byte with the files in -o")
    p.add_argument("--save-benchmark", action="store_true", help="also write benchmark.json (min/max/avg) in the cwd")
    return p


def _tensor_file(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name) + ".bin"


def _ms_stats(times_ms: list[float]):
    import numpy as np

    t = np.asarray(times_ms if times_ms else [0.0], dtype=np.float64)
    stats = {"min": t.min(), "max": t.max(), "avg": t.mean(), "median": float(np.median(t))}
    # The board labels its percentiles the other way round (its "99%" is about the fastest run, seed
    # log: P99 < P5); the emulator keeps that so parsers meet the same printout.
    pct = {p: float(np.percentile(t, 100 - p)) for p in (5, 90, 95, 99)}
    return stats, pct


def _print_block(times_ms: list[float]) -> dict:
    s, p = _ms_stats(times_ms)
    print(RULE)
    print(f"  min = {s['min']:7.3f} ms   max = {s['max']:7.3f} ms   avg = {s['avg']:7.3f} ms  median = {s['median']:7.3f} ms")
    print(f"   5% = {p[5]:7.3f} ms   90% = {p[90]:7.3f} ms   95% = {p[95]:7.3f} ms     99% = {p[99]:7.3f} ms")
    print(RULE)
    return {"min": s["min"], "max": s["max"], "avg": s["avg"]}


def _banner(args: argparse.Namespace, meta: dict, cmm_bytes: int, ort_version: str) -> None:
    mode = str(meta.get("npu_mode", "NPU1")).upper()
    vnpu = {0: "Disable", 1: "STD", 2: "BigLittle"}[args.vnpu]
    rows = [
        ("model", args.model),
        ("type", "Half" if mode == "NPU1" else "Full"),
        ("vnpu", vnpu),
        ("affinity", f"0b{args.affinity:02b}"),
        ("warmup", str(args.warmup)),
        ("repeat", str(args.repeat)),
        ("batch", "{ auto: 0 }" if args.batch == 0 else f"{{ {args.batch} }}"),
        ("pulsar2 ver", f"{meta.get('compiler', 'pulsar2-emulator')} (EMULATED)"),
        ("engine ver", f"EMULATOR onnxruntime {ort_version}"),
        ("tool ver", f"{TOOL_VERSION}-EMULATOR-{EMULATOR_VERSION}"),
        ("cmm size", f"{cmm_bytes} Bytes"),
    ]
    print(f"  [EMULATOR] ax_run_model board emulator {EMULATOR_VERSION}: ONNX Runtime on the CPU, no NPU")
    print("   Run AxModel:")
    for label, value in rows:
        print(f"{label:>14}: {value}")
    sys.stdout.flush()


class _Model:
    def __init__(self, meta: dict, onnx_bytes: bytes) -> None:
        import numpy as np
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.np = np
        self.session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()
        self.ort_version = ort.__version__

    def input_spec(self, i: int) -> tuple[str, tuple[int, ...]]:
        shape = tuple(d if isinstance(d, int) else 1 for d in self.inputs[i].shape)
        return self.inputs[i].name, shape

    def zeros(self) -> dict:
        return {inp.name: self.np.zeros(self.input_spec(i)[1], self.np.float32) for i, inp in enumerate(self.inputs)}

    def run(self, feeds: dict) -> tuple[list, float]:
        t0 = time.perf_counter()
        out = self.session.run(None, feeds)
        return out, (time.perf_counter() - t0) * 1e3


def _read_set(model: _Model, folder: Path) -> dict:
    np = model.np
    feeds = {}
    for i, _ in enumerate(model.inputs):
        name, shape = model.input_spec(i)
        path = folder / _tensor_file(name)
        want = 4 * int(np.prod(shape))
        if not path.is_file():
            raise ValueError(f"input file {{{path}}} not found (tensor {name!r})")
        data = path.read_bytes()
        if len(data) != want:
            raise ValueError(f"input file {{{path}}} is {len(data)} bytes, tensor {name!r} float32 {list(shape)} needs {want}")
        feeds[name] = np.frombuffer(data, dtype="<f4").reshape(shape)
    return feeds


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _list_entries(args: argparse.Namespace) -> list[str]:
    if args.list:
        raw = Path(args.list).read_bytes().decode("utf-8", errors="replace")
        # The board splits on "\n" only: a CRLF list leaves "\r" on every entry but an unterminated last one.
        entries = raw.split("\n")
        if entries and entries[-1] == "":
            entries.pop()
        return entries
    root = Path(args.input_folder)
    return sorted((p.name for p in root.iterdir() if p.is_dir()), key=lambda s: (len(s), s))


def _call_log(entry: str) -> None:
    path = os.environ.get("AX_EMULATOR_CALL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {entry}\n")


def _run_sets(args: argparse.Namespace, model: _Model) -> tuple[int, list[float]]:
    in_root = args.input_folder
    entries = _list_entries(args)
    print(f"  Total found {{{len(entries)}}} input stimulus folders.")
    ran, failed, times = 0, 0, []
    warm_done = False
    for entry in entries:
        folder = Path(in_root) / entry
        if not entry or not folder.is_dir():
            print(f"  {{{entry}}} does not has input folder {{{in_root}}}, skipped.")
            continue
        try:
            feeds = _read_set(model, folder)
        except ValueError as e:
            print(f"[ERROR] {{{entry}}} {e}.")
            print("[ERROR] Run model failed.")
            failed += 1
            continue
        if not warm_done:
            for _ in range(max(args.warmup, 0)):
                model.run(feeds)
            warm_done = True
        outs, ms = [], []
        for _ in range(max(args.repeat, 1)):
            outs, t = model.run(feeds)
            ms.append(t)
        times.extend(ms)
        _call_log(entry)
        if args.output_folder:
            bad = _store_outputs(args, model, entry, outs)
            failed += bad
        ran += 1
        sys.stdout.flush()
    print(f"  Inferring model, total {ran}/{len(entries)}. Done.")
    return (1 if failed else 0), times


def _store_outputs(args: argparse.Namespace, model: _Model, entry: str, outs: list) -> int:
    bad = 0
    for meta_out, arr in zip(model.outputs, outs):
        data = model.np.ascontiguousarray(arr, dtype="<f4").tobytes()
        path = Path(args.output_folder) / entry / _tensor_file(meta_out.name)
        if not args.verify:
            _write_atomic(path, data)
            continue
        if not path.is_file():
            print(f"[ERROR] verify {{{entry}}}: {{{path}}} not found.")
            bad += 1
            continue
        ref = path.read_bytes()
        diff = [i for i in range(min(len(ref), len(data))) if ref[i] != data[i]]
        if len(ref) != len(data) or diff:
            print(f"  verify {{{entry}}} {meta_out.name}: mismatch, {len(diff)} byte(s) differ, first offsets {diff[:8]}, "
                  f"size {len(data)} vs file {len(ref)}.")
            bad += 1
        else:
            print(f"  verify {{{entry}}} {meta_out.name}: OK.")
    return bad


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    axmodel = _load_axmodel_module()
    try:
        meta, onnx_bytes = axmodel.read_emulated(args.model)
    except FileNotFoundError:
        print(f"[ERROR] model {{{args.model}}} not found.")
        return 1
    except axmodel.NotEmulatedAxmodel as e:
        print(f"  [EMULATOR] ax_run_model board emulator {EMULATOR_VERSION}")
        print(f"[ERROR] {e}")
        print("[ERROR] This is the board EMULATOR: it runs only EMULATED axmodels written by the project's Pulsar2 "
              "emulator. Run a real axmodel on the AX630C board.")
        return 1
    model = _Model(meta, onnx_bytes)
    _banner(args, meta, len(onnx_bytes), model.ort_version)
    if args.input_folder:
        if not Path(args.input_folder).is_dir():
            print(f"[ERROR] input folder {{{args.input_folder}}} not found.")
            return 1
        rc, times = _run_sets(args, model)
    else:
        feeds = model.zeros()
        for _ in range(max(args.warmup, 0)):
            model.run(feeds)
        times = [model.run(feeds)[1] for _ in range(max(args.repeat, 1))]
        rc = 0
    stats = _print_block(times)
    if args.save_benchmark:
        import json

        _write_atomic(Path("benchmark.json"), (json.dumps({**stats, "EMULATED": True}) + "\n").encode())
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
