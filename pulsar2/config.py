"""Generate the Pulsar2 build config (``kws_build_int8_config.json``) from the ONNX and the calibration tar.

Static choices come from ``pulsar2/config.template.json`` (the seed's working Pulsar2 4.2 build: AX620E,
NPU1, MinMax, Numpy calibration, all samples, onnxsim + model check, compiler check 0); the options of
``[pulsar2]`` in a preset (``pipeline/params/presets/*.toml``) override them (NPU2, calibration method/size, U16 layers,
precision analysis). Tensor names and the input shape are read from the ONNX. Every path is written as
the Pulsar2 container sees it: the compile step mounts the build directory at ``/data/build``
(docs/design.md), so nothing host-absolute ever reaches the config.

Before anything is written the config is validated against ``schemas/pulsar2-config.schema.json`` and
checked against the ONNX I/O and every ``.npy`` in the calibration tar (shape and float32).

    python -m pulsar2.config --onnx build/model/kws.onnx \\
        --calib build/calib/calib_kws.tar --build build --out build/pulsar2/kws_build_int8_config.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.core.cli import StageError, die, parse_stage_args, run_main, setup_logging, stage_parser
from pipeline.core.io import atomic_write_json
from pulsar2.checks import check_calibration_archive, check_onnx_against_config, onnx_io
from pulsar2.schema import validate_config

log = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parent / "config.template.json"
CONTAINER_BUILD = PurePosixPath("/data/build")
OUTPUT_NAME = "compiled.axmodel"


def container_path(host_path: Path, build_dir: Path, what: str) -> str:
    """``build/calib/x.tar`` -> ``/data/build/calib/x.tar``; refuses paths outside the mounted build dir."""
    try:
        rel = host_path.resolve().relative_to(build_dir.resolve())
    except ValueError:
        raise StageError(f"{host_path}: the {what} must lie inside the build directory {build_dir} (only it is "
                         f"mounted at {CONTAINER_BUILD} in the Pulsar2 container); pass --build so that it contains it"
                         ) from None
    return str(CONTAINER_BUILD.joinpath(*rel.parts))


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise StageError(f"{path}: cannot read the config template ({e}); restore it from git") from None


def layer_configs(u16_layers: Sequence[str], node_names: set[str], op_types: set[str], onnx_name: str) -> list[dict[str, Any]]:
    """U16 overrides: names that are ONNX op types -> ``op_types``, node names -> ``layer_names``, DEFAULT -> whole graph."""
    ops = [n for n in u16_layers if n in op_types and n not in node_names]
    layers = [n for n in u16_layers if n in node_names]
    unknown = [n for n in u16_layers if n not in op_types and n not in node_names and n != "DEFAULT"]
    if unknown:
        some = sorted(node_names)[:6]
        die(f"{onnx_name}: u16_layers {unknown} are neither node names nor op types of the model "
            f"(op types: {sorted(op_types)}; node names e.g. {some}); fix pulsar2.toml")
    out: list[dict[str, Any]] = []
    if "DEFAULT" in u16_layers:
        out.append({"start_tensor_names": ["DEFAULT"], "end_tensor_names": ["DEFAULT"], "data_type": "U16"})
    if layers:
        out.append({"layer_names": layers, "data_type": "U16"})
    if ops:
        out.append({"op_types": ops, "data_type": "U16"})
    return out


def make_config(
    template: dict[str, Any], *, onnx_path: Path, calib_path: Path, build_dir: Path, output_dir: Path,
    target_hardware: str, npu_mode: str, calibration_method: str, calibration_size: int,
    u16_layers: Sequence[str], precision_analysis: bool,
) -> dict[str, Any]:
    """The full config dict (not yet validated) for a one-input model."""
    inputs, outputs, node_names, op_types = onnx_io(onnx_path)
    if len(inputs) != 1:
        die(f"{onnx_path}: expected exactly one model input, found {[t.name for t in inputs]}; "
            "the KWS model takes one float32[1,1,98,64] tensor")
    tin = inputs[0]
    if not tin.static:
        die(f"{onnx_path}: input {tin.name!r} has a dynamic shape {list(tin.shape)}; export with a static batch of 1")
    if tin.dtype != "float32":
        die(f"{onnx_path}: input {tin.name!r} is {tin.dtype}; the KWS model input must be float32")
    t = copy.deepcopy(template)
    quant = t["quant"]
    ic = {"tensor_name": tin.name, "calibration_dataset": container_path(calib_path, build_dir, "calibration tar")}
    ic.update({k: v for k, v in quant["input_configs"][0].items() if k not in ic})
    ic["calibration_size"] = int(calibration_size)
    quant["input_configs"] = [ic]
    quant["calibration_method"] = calibration_method
    quant["precision_analysis"] = bool(precision_analysis)
    lc = layer_configs(u16_layers, node_names, op_types, str(onnx_path))
    if lc:
        quant["layer_configs"] = lc
    in_proc = [{**t["input_processors"][0], "tensor_name": tin.name}]
    out_proc = [{**t["output_processors"][0], "tensor_name": o.name} for o in outputs]
    cfg: dict[str, Any] = {
        "input": container_path(onnx_path, build_dir, "ONNX model"),
        "output_dir": container_path(output_dir, build_dir, "output directory"),
        "output_name": OUTPUT_NAME,
        "model_type": t.get("model_type", "ONNX"),
        "target_hardware": target_hardware,
        "npu_mode": npu_mode,
        "input_shapes": f"{tin.name}:{'x'.join(str(d) for d in tin.shape)}",
    }
    for key in ("onnx_opt",):
        if key in t:
            cfg[key] = t[key]
    cfg["quant"] = quant
    cfg["input_processors"] = in_proc
    cfg["output_processors"] = out_proc
    if "compiler" in t:
        cfg["compiler"] = t["compiler"]
    return cfg


def build_parser() -> argparse.ArgumentParser:
    p = stage_parser("Write the schema-validated Pulsar2 build config (paths as seen in the container).", "pulsar2")
    p.add_argument("--onnx", type=Path, required=True, help="float ONNX model (pipeline.stages.export)")
    p.add_argument("--calib", type=Path, required=True, help="calibration tar of float32 .npy (pipeline.stages.calib)")
    p.add_argument("--build", type=Path, required=True, help="build directory; mounted at /data/build in the container")
    p.add_argument("--out", type=Path, required=True, help="config file to write (inside --build)")
    p.add_argument("--template", type=Path, default=TEMPLATE_PATH, help="static part of the config")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_stage_args(build_parser(), argv, "pulsar2")
    setup_logging(args.verbose)
    for path, what, fix in ((args.onnx, "ONNX model", "make onnx"), (args.calib, "calibration tar", "make calib")):
        if not path.is_file():
            die(f"{path}: {what} not found; build it with `{fix}`")
    if args.calibration_size == 0 or args.calibration_size < -1:
        die(f"--calibration-size {args.calibration_size}: use -1 (all) or a positive count")
    container_path(args.out, args.build, "config file")
    cfg = make_config(
        load_template(args.template), onnx_path=args.onnx, calib_path=args.calib, build_dir=args.build,
        output_dir=args.out.parent / "output", target_hardware=args.target_hardware, npu_mode=args.npu_mode,
        calibration_method=args.calibration_method, calibration_size=args.calibration_size,
        u16_layers=args.u16_layers, precision_analysis=args.precision_analysis,
    )
    errors = validate_config(cfg)
    if errors:
        die(f"{args.out}: the generated config breaks schemas/pulsar2-config.schema.json (nothing written):\n  "
            + "\n  ".join(errors))
    problems = check_onnx_against_config(cfg, args.onnx, where=str(args.out))
    tensor = onnx_io(args.onnx)[0][0]
    calib_problems, n_files = check_calibration_archive(args.calib, tensor, cfg["quant"]["input_configs"][0]["calibration_format"])
    problems += calib_problems
    if problems:
        die("nothing written:\n  " + "\n  ".join(problems))
    if args.calibration_size > n_files:
        log.warning("calibration_size %d > %d files in %s: Pulsar2 uses all %d", args.calibration_size, n_files,
                    args.calib, n_files)
    atomic_write_json(args.out, cfg)
    used = n_files if args.calibration_size == -1 else min(n_files, args.calibration_size)
    print(f"wrote {args.out}: {cfg['target_hardware']} {cfg['npu_mode']} {cfg['quant']['calibration_method']}, "
          f"input {tensor.name}{list(tensor.shape)}, calibration {used}/{n_files} tensors from {args.calib}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
