"""``pulsar2 build`` as the PULSAR2 EMULATOR does it (NOT the Axera compiler).

    pulsar2 build --config /data/build/pulsar2/kws_build_int8_config.json          # in the emulator image
    python -m pulsar2.emulator build --config build/pulsar2/kws_build_int8_config.json --data-root build

Order of work, as the real tool: config (file + CLI overrides) -> schema -> ONNX and calibration checks ->
frontend/optimized.onnx -> quant/dataset/<input>/ (extracted archive) -> quant/quant_axmodel.onnx (ONNX
Runtime QDQ INT8) -> compiled.axmodel (EMULATED container). Everything is checked before anything is
written, and the output directory is replaced as a whole only when the build succeeded.

``--data-root DIR`` (emulator only) maps the container path ``/data/build`` to DIR so the same config runs
natively on the host (RUNNER=local). Relative paths resolve from the working directory, as in Pulsar2.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import inspect
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipeline.core.cli import die
from pipeline.core.io import atomic_dir, atomic_write_json
from pipeline.core.workers import cpu_session
from pulsar2 import axmodel
from pulsar2.checks import (
    calibration_members,
    check_calibration_archive,
    check_onnx_against_config,
    effective_inputs,
    load_calibration,
    onnx_io,
)
from pulsar2.emulator import EMULATOR_VERSION
from pulsar2.emulator.quantize import METHODS, quantize
from pulsar2.schema import load_config_file, validate_config

log = logging.getLogger(__name__)

CONTAINER_BUILD = PurePosixPath("/data/build")
BANNER = (
    "=" * 78 + "\n"
    f"  PULSAR2 EMULATOR {EMULATOR_VERSION} - NOT the Axera Pulsar2 compiler\n"
    "  INT8 by ONNX Runtime static quantization (QDQ); the output is an EMULATED axmodel\n"
    "  container that only the project's board emulator runs. For a real board, load the\n"
    "  vendor image (invoke pulsar2.load --tarball ax_pulsar2_<ver>.tar.gz) and rebuild.\n"
    + "=" * 78
)

# CLI overrides of `pulsar2 build` that the emulator honours: flag -> (config path, type)
_BOOL = "bool"
OVERRIDES: dict[str, tuple[tuple[str, ...], Any]] = {
    "input": (("input",), str),
    "output_dir": (("output_dir",), str),
    "output_name": (("output_name",), str),
    "work_dir": (("work_dir",), str),
    "model_type": (("model_type",), str),
    "target_hardware": (("target_hardware",), str),
    "npu_mode": (("npu_mode",), str),
    "input_shapes": (("input_shapes",), str),
    "onnx_opt.disable_onnx_optimization": (("onnx_opt", "disable_onnx_optimization"), _BOOL),
    "onnx_opt.enable_onnxsim": (("onnx_opt", "enable_onnxsim"), _BOOL),
    "onnx_opt.model_check": (("onnx_opt", "model_check"), _BOOL),
    "quant.calibration_method": (("quant", "calibration_method"), str),
    "quant.precision_analysis": (("quant", "precision_analysis"), _BOOL),
    "quant.precision_analysis_method": (("quant", "precision_analysis_method"), str),
    "quant.precision_analysis_mode": (("quant", "precision_analysis_mode"), str),
    "quant.device": (("quant", "device"), str),
    "compiler.check": (("compiler", "check"), int),
    "compiler.check_mode": (("compiler", "check_mode"), str),
    "compiler.check_rtol": (("compiler", "check_rtol"), float),
    "compiler.check_atol": (("compiler", "check_atol"), float),
    "compiler.check_cosine_simularity": (("compiler", "check_cosine_simularity"), float),
}


def parse_bool(text: str) -> bool:
    """Pulsar2 bool flags take a value: true/false, 1/0, yes/no."""
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false or 1/0, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulsar2", description="PULSAR2 EMULATOR (NOT the Axera compiler)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the emulator version")
    b = sub.add_parser("build", help="quantize an ONNX model into an EMULATED axmodel")
    b.add_argument("--config", required=True, help="build config (strict JSON)")
    b.add_argument("--data-root", type=Path, default=None,
                   help="emulator only: host directory standing for /data/build (native runs)")
    for flag, (_, typ) in OVERRIDES.items():
        b.add_argument(f"--{flag}", dest=flag.replace(".", "__"), default=None,
                       type=parse_bool if typ is _BOOL else typ, metavar="VALUE")
    return p


def apply_overrides(config: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Set CLI-given values into the config (CLI wins, as in Pulsar2); returns the flags applied."""
    applied = []
    for flag, (path, _) in OVERRIDES.items():
        value = getattr(args, flag.replace(".", "__"))
        if value is None:
            continue
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        applied.append(f"--{flag} {value}")
    return applied


def host_path(path: str, data_root: Path | None) -> Path:
    """A config path as a file on this machine (``/data/build/...`` -> ``data_root/...`` when mapped)."""
    p = PurePosixPath(path)
    if data_root is not None and (p == CONTAINER_BUILD or CONTAINER_BUILD in p.parents):
        return data_root.joinpath(*p.relative_to(CONTAINER_BUILD).parts)
    return Path(path) if Path(path).is_absolute() else Path.cwd() / path


def say(level: str, message: str) -> None:
    """A log line in Pulsar2's (loguru) layout, marked as the emulator's."""
    frame = inspect.stack()[1]
    ts = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    print(f"{ts} | {level:<8} | pulsar2_emulator.build:{frame.function}:{frame.lineno} - {message}", flush=True)


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A box table like Pulsar2's rich tables."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda left, mid, right, cells: left + mid.join(f" {c:<{w}} " for c, w in zip(cells, widths)) + right
    bar = lambda left, mid, right: left + mid.join("━" * (w + 2) for w in widths) + right
    total = sum(widths) + 3 * len(widths) + 1
    out = [title.center(total), bar("┏", "┳", "┓"), line("┃", "┃", "┃", header), bar("┡", "╇", "┩")]
    out += [line("│", "│", "│", r) for r in rows]
    out.append("└" + "┴".join("─" * (w + 2) for w in widths) + "┘")
    return "\n".join(out)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 if den == 0.0 else float(np.dot(a, b) / den)


def _run(session: Any, name: str, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [session.run(None, {name: np.ascontiguousarray(a, np.float32)})[0] for a in arrays]


def _extract(archive: Path, tensor_name: str, fmt: str, dest: Path) -> int:
    """Copy the calibration files of one input to ``dest`` (as Pulsar2 does into quant/dataset/<input>)."""
    dest.mkdir(parents=True, exist_ok=True)
    members = calibration_members(archive, tensor_name, fmt)
    for name, data in members:
        (dest / PurePosixPath(name).name).write_bytes(data)
    return len(members)


def check_everything(config: dict[str, Any], config_name: str, data_root: Path | None) -> dict[str, Any]:
    """Schema + files + ONNX I/O + calibration archive; dies listing every problem; returns resolved facts."""
    errors = validate_config(config)
    if errors:
        die(f"{config_name}: {len(errors)} schema error(s) (schemas/pulsar2-config.schema.json):\n  " + "\n  ".join(errors))
    if config.get("model_type", "ONNX") != "ONNX":
        die(f"{config_name}: model_type {config['model_type']!r}: the emulator builds ONNX models only")
    onnx_path = host_path(config["input"], data_root)
    if not onnx_path.is_file():
        die(f"{config_name}: input {config['input']} -> {onnx_path}: ONNX model not found; build it with `make onnx`"
            + ("" if data_root else " (running natively? pass --data-root BUILD_DIR for /data/build paths)"))
    try:
        inputs, outputs, _, _ = onnx_io(onnx_path)
    except Exception as e:  # onnx raises DecodeError / ValidationError etc. for a bad file
        die(f"{onnx_path}: not a readable ONNX model ({type(e).__name__}: {e}); re-export it with `make onnx`")
    problems = check_onnx_against_config(config, onnx_path, where=config_name)
    if len(inputs) != 1:
        problems.append(f"{onnx_path}: the emulator supports one-input models; this one has {[t.name for t in inputs]}")
    eff = effective_inputs(config, inputs)
    calib: list[tuple[dict[str, Any], Path, int]] = []
    for k, ic in enumerate(config["quant"]["input_configs"]):
        archive = host_path(ic["calibration_dataset"], data_root)
        fmt = ic.get("calibration_format", "Image")
        if fmt not in ("Numpy", "Binary"):
            problems.append(f"{config_name}: $.quant.input_configs[{k}].calibration_format {fmt!r}: the emulator reads "
                            "Numpy and Binary archives (this project writes Numpy)")
            continue
        if ic.get("calibration_mean") or ic.get("calibration_std"):
            problems.append(f"{config_name}: $.quant.input_configs[{k}]: calibration_mean/std are for Image data; "
                            "leave them empty for Numpy tensors (pulsar2-docs advanced_build_guides.md)")
        targets = eff if ic["tensor_name"] == "DEFAULT" else [t for t in eff if t.name == ic["tensor_name"]]
        for t in targets:
            found, n_files = check_calibration_archive(archive, t, fmt, shown_path=f"{ic['calibration_dataset']} ({archive})")
            problems += found
            calib.append((ic, archive, n_files))
    if problems:
        die(f"{config_name}: nothing written:\n  " + "\n  ".join(problems))
    return {"onnx_path": onnx_path, "inputs": eff, "outputs": outputs, "calib": calib,
            "output_dir": host_path(config["output_dir"], data_root)}


def build(config: dict[str, Any], config_name: str, config_sha256: str, data_root: Path | None, applied: list[str]) -> Path:
    import onnx
    import onnxruntime as ort

    facts = check_everything(config, config_name, data_root)
    tin, tout = facts["inputs"][0], facts["outputs"][0]
    ic, archive, n_files = facts["calib"][0]
    fmt = ic.get("calibration_format", "Image")
    size = int(ic.get("calibration_size", 32))
    n_used = n_files if size == -1 else min(size, n_files)
    method = config["quant"].get("calibration_method", "MinMax")
    output_name = config.get("output_name", "compiled.axmodel")
    out_dir: Path = facts["output_dir"]
    for flag in applied:
        say("INFO", f"command line override {flag}")
    for k in ("output_processors",):
        if not config.get(k):
            say("WARNING", f"apply default output processor configuration to {[t.name for t in facts['outputs']]}")

    with atomic_dir(out_dir) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the output dir should look like a plain mkdir's
        # frontend: fix the input shape, ORT basic graph optimisation (standard ONNX ops only)
        model = onnx.load(str(facts["onnx_path"]))
        for v in model.graph.input:
            if v.name == tin.name:
                for d, size_d in zip(v.type.tensor_type.shape.dim, tin.shape):
                    d.ClearField("dim_param")
                    d.dim_value = int(size_d)
        say("WARNING", f"modify input shape to {{'{tin.name}': {tuple(tin.shape)}}}")
        (tmp / "frontend").mkdir()
        shaped = tmp / "frontend" / "input_shaped.onnx"
        onnx.save(model, str(shaped))
        optimized = tmp / "frontend" / "optimized.onnx"
        if config.get("onnx_opt", {}).get("disable_onnx_optimization", False):
            shutil.copyfile(shaped, optimized)
        else:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.optimized_model_filepath = str(optimized)
            opts.intra_op_num_threads = 1
            ort.InferenceSession(str(shaped), sess_options=opts, providers=["CPUExecutionProvider"])
        shaped.unlink()
        say("INFO", f"save optimized onnx to [{PurePosixPath(config['output_dir']) / 'frontend' / 'optimized.onnx'}]")

        # quant: extract the calibration set, calibrate, write the QDQ model
        ds = tmp / "quant" / "dataset" / tin.name
        say("INFO", f"extract [{ic['calibration_dataset']}] to [{PurePosixPath(config['output_dir']) / 'quant' / 'dataset' / tin.name}]...")
        _extract(archive, tin.name, fmt, ds)
        arrays = load_calibration(archive, tin, fmt, size)
        print(f"{n_used} File(s) Loaded.")
        print(table("Quant Config Table", ["Input", "Shape", "Dataset Directory", "Data Format", "Tensor Format", "Mean", "Std"],
                    [[tin.name, str(list(tin.shape)), str(PurePosixPath(config["output_dir"]) / "quant" / "dataset" / tin.name),
                      fmt, "GRAY" if len(tin.shape) == 4 and tin.shape[1] == 1 else "AutoColorSpace",
                      str(ic.get("calibration_mean") or [0]), str(ic.get("calibration_std") or [1])]]))
        print("Quantization calibration will be executed on cpu (EMULATOR: ONNX Runtime)")
        ort_method = METHODS[method][0]
        say("INFO", f"calibration_method {method} -> onnxruntime CalibrationMethod.{ort_method}"
            + (" (approximation: ORT has no MSE search)" if method == "MSE" else ""))
        qpath = tmp / "quant" / "quant_axmodel.onnx"
        try:
            summary = quantize(optimized, qpath, tin.name, arrays, method, config["quant"].get("layer_configs", []))
        except ValueError as e:
            die(f"{config_name}: {e}")
        except Exception as e:  # onnxruntime.quantization raises many types; name it and stop
            die(f"{config_name}: ONNX Runtime quantization failed ({type(e).__name__}: {e})")
        print(f"Calibration Progress(Phase 1): {len(arrays)}/{len(arrays)}")
        print(table("Network Snapshot (EMULATOR)", ["op", "float nodes", "nodes with INT8 inputs"],
                    [[op, str(n), str(summary["ops_with_int8_inputs"].get(op, 0))] for op, n in summary["float_model_ops"].items()]))

        # compare FP32 vs INT8 on the calibration tensors (end-to-end; the real tool's per-layer table is not emulated)
        fsess, qsess = cpu_session(str(optimized)), cpu_session(str(qpath))
        probe = arrays[: min(len(arrays), 32)]
        cos = [_cosine(a, b) for a, b in zip(_run(fsess, tin.name, probe), _run(qsess, tin.name, probe))]
        say("SUCCESS", f"EMULATOR e2e check [{tout.name}] float vs INT8 on {len(probe)} calibration tensors: "
            f"mean cosine {np.mean(cos):.5f}, min {np.min(cos):.5f}")
        debug = tmp / "quant" / "debug"
        if config["quant"].get("precision_analysis", False):
            debug.mkdir(parents=True)
            (debug / "precision_analysis_table.txt").write_text(
                "EMULATOR precision analysis (end-to-end only; Pulsar2's per-layer table is not emulated)\n"
                f"output\tcosine_mean\tcosine_min\tsamples\n{tout.name}\t{np.mean(cos):.6f}\t{np.min(cos):.6f}\t{len(probe)}\n",
                encoding="utf-8")
            say("INFO", "precision analysis written to quant/debug/precision_analysis_table.txt (end-to-end only)")
        check = int(config.get("compiler", {}).get("check", 0))
        if check:
            say("WARNING", f"compiler.check {check}: in the EMULATOR the compiled model IS the quantized ONNX, "
                "so compiled-vs-quant checks are identical by construction")
        qbytes = qpath.read_bytes()
        atomic_write_json(tmp / "quant" / "quant_axmodel.json", {"EMULATED": True, **summary})
        meta = {
            "target_hardware": config.get("target_hardware", "AX650"),
            "npu_mode": config.get("npu_mode", "NPU1"),
            "input": tin.as_dict(),
            "output": tout.as_dict(),
            "compiler": f"pulsar2-emulator {EMULATOR_VERSION}",
            "emulates": "pulsar2 build (Axera); NOT a real axmodel",
            "quantization": summary,
            "calibration": {"archive": ic["calibration_dataset"], "format": fmt, "files": n_files, "used": len(arrays)},
            "source_onnx_sha256": hashlib.sha256(facts["onnx_path"].read_bytes()).hexdigest(),
            "config_sha256": config_sha256,
            "fp32_vs_int8_cosine_on_calibration": {"mean": float(np.mean(cos)), "min": float(np.min(cos))},
        }
        axmodel.write_emulated(tmp / output_name, qbytes, meta)
        atomic_write_json(tmp / "build_context.json", {"EMULATED": True, "compiler": meta["compiler"], "config": config})
        (tmp / "compiler").mkdir()
        (tmp / "compiler" / "EMULATED.txt").write_text(
            "PULSAR2 EMULATOR: there is no NPU backend here; compiled.axmodel embeds quant/quant_axmodel.onnx.\n",
            encoding="utf-8")
    say("SUCCESS", f"build finished: {PurePosixPath(config['output_dir']) / output_name} (EMULATED axmodel, "
        f"{len(qbytes)} bytes of QDQ INT8 ONNX)")
    return out_dir / output_name


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"version: pulsar2-emulator {EMULATOR_VERSION} (EMULATOR, NOT the Axera compiler)")
        return 0
    print(BANNER, flush=True)
    config, errors = load_config_file(args.config)
    if config is None:
        die("; ".join(errors))
    if not isinstance(config, dict):
        die(f"{args.config}: the config must be a JSON object")
    applied = apply_overrides(config, args)
    data_root = args.data_root.resolve() if args.data_root else None
    sha = hashlib.sha256(Path(args.config).read_bytes()).hexdigest()
    build(config, str(args.config), sha, data_root, applied)
    return 0
