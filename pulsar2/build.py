"""Compile the Pulsar2 config into ``compiled.axmodel`` with the compiler ``pulsar2.choice`` chose.

    python -m pulsar2.build --config build/pulsar2/kws_build_int8_config.json --build build \\
        --out build/pulsar2/output/compiled.axmodel --choice build/stamps/pulsar2.json \\
        --emulator-image-id build/images/pulsar2-emulator.id

- ``real``: Axera's Pulsar2 runs in the vendor image with the build dir mounted at ``/data/build``
  (``pulsar2 build --config /data/build/...``), then chowns its root-owned outputs back.
- ``emulator-docker`` / ``emulator-local``: the PULSAR2 EMULATOR runs (a loud banner), in the emulator image or
  natively (``/data/build`` mapped to the build dir).

The output directory is emptied first; success needs exit status 0 AND a non-empty compiled.axmodel AND
no Python traceback in the log. The compiler's log goes to ``output/build.log``; ``output/manifest.json``
(written last, and the make target: a build killed before it is rebuilt) records ``emulated``, the compiler version, the image and the config/axmodel sha256.

Standard library only (plus the stdlib-only ``pipeline.core.io``/``pipeline.core.provenance`` and ``pulsar2.axmodel``):
with the docker runner this runs on the host, where the ML stack need not be installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.core.io import atomic_write_json, sha256_file
from pipeline.core.provenance import manifest
from pulsar2 import axmodel, choice
from pulsar2.choice import docker_cmd

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINER_BUILD = PurePosixPath("/data/build")
BANNER = "\n".join([
    "#" * 78,
    "#  PULSAR2 EMULATOR - NOT the Axera compiler".ljust(77) + "#",
    "#  The vendor Pulsar2 image is not in use, so the project's emulator builds".ljust(77) + "#",
    "#  an EMULATED axmodel (ONNX Runtime INT8 in a marked container). Only the".ljust(77) + "#",
    "#  board EMULATOR runs it; a real AX630C needs the vendor compiler:".ljust(77) + "#",
    "#    invoke pulsar2.load --tarball ax_pulsar2_<ver>.tar.gz".ljust(77) + "#",
    "#    make all PULSAR2_IMAGE=pulsar2:<ver>        (see pulsar2/README.md)".ljust(77) + "#",
    "#" * 78,
])


class BuildError(Exception):
    """Bad input or a failed build: printed as ``error: ...``, exit status 2 (pipeline.core.cli.StageError's twin;
    pipeline.core.cli is not imported because it needs jsonschema, and this module must stay stdlib-only)."""


def host_path(container: str, build_dir: Path) -> Path:
    p = PurePosixPath(container)
    if p != CONTAINER_BUILD and CONTAINER_BUILD not in p.parents:
        raise BuildError(f"path {container!r} in the config is not under {CONTAINER_BUILD}, the only directory mounted "
                         "into the Pulsar2 container; regenerate the config with `make config`")
    return build_dir.joinpath(*p.relative_to(CONTAINER_BUILD).parts)


def read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"{path}: config not found; generate it with `make config`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BuildError(f"{path}: not strict JSON ({e}); regenerate it with `make config`") from None
    for key in ("input", "output_dir", "quant"):
        if key not in cfg:
            raise BuildError(f"{path}: no {key!r}; regenerate it with `make config`")
    return cfg


def clean_output(out_dir: Path) -> None:
    """Remove the previous output dir so nothing stale looks fresh (root-owned leftovers need a hint)."""
    if not out_dir.exists():
        return
    try:
        shutil.rmtree(out_dir)
    except PermissionError as e:
        raise BuildError(f"{out_dir}: cannot remove the previous output ({e}); it is probably root-owned from a "
                         f"container run: sudo rm -rf {out_dir}") from None


def run_logged(cmd: list[str], log_path: Path, env: dict[str, str] | None = None, header: str = "") -> int:
    """Run ``cmd``, streaming its merged stdout/stderr to our stdout and to ``log_path``; return its status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8", newline="\n") as log:
        if header:
            log.write(header + "\n")
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    text=True, errors="replace", bufsize=1)
        except FileNotFoundError as e:
            raise BuildError(f"cannot start {cmd[0]!r} ({e})") from None
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        return proc.wait()


def real_version(image: str) -> str:
    """``pulsar2 version`` in the image, e.g. ``4.2 751f68f9``; ``unknown`` if it cannot be read."""
    try:
        r = subprocess.run([docker_cmd(), "run", "--rm", "--entrypoint", "/bin/bash", image, "-lc", "pulsar2 version"],
                           capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    found = dict(re.findall(r"^\s*(version|commit)\s*:\s*(\S+)", r.stdout, re.M))
    return " ".join(v for v in (found.get("version"), found.get("commit")) if v) or "unknown"


def build(args: argparse.Namespace) -> dict[str, Any]:
    build_dir = args.build.resolve()
    cfg = read_config(args.config)
    container_config = str(CONTAINER_BUILD.joinpath(*args.config.resolve().relative_to(build_dir).parts)) \
        if args.config.resolve().is_relative_to(build_dir) else None
    if container_config is None:
        raise BuildError(f"{args.config}: the config must lie inside --build {args.build} (mounted at {CONTAINER_BUILD})")
    out_dir = host_path(cfg["output_dir"], build_dir)
    axm = out_dir / cfg.get("output_name", "compiled.axmodel")
    if axm.resolve() != args.out.resolve():
        raise BuildError(f"{args.config}: output_dir/output_name give {axm}, but --out is {args.out}; "
                         "regenerate the config with `make config`")
    try:
        chosen = choice.read_choice(args.choice)
    except choice.ChoiceError as e:
        raise BuildError(str(e)) from None
    mode, image_tag = chosen["mode"], chosen["image"]
    why = {"real": f"image {image_tag} ({chosen['image_id'][:19]})", "emulator-docker": f"image {image_tag} not loaded",
           "emulator-local": "runner local, default image not used"}[mode]
    emu_image = ""
    if mode == "emulator-docker":
        idfile = Path(args.emulator_image_id) if args.emulator_image_id else None
        emu_image = idfile.read_text(encoding="utf-8").strip() if idfile and idfile.is_file() else ""
        if not emu_image:
            raise BuildError(f"runner docker needs the emulator image id file ({args.emulator_image_id or 'not given'}); "
                             "make builds it (build/images/pulsar2-emulator.id), or use RUNNER=local")

    clean_output(out_dir)
    tmp_log = out_dir.parent / f".{out_dir.name}.build.log.tmp"
    uid, gid = os.getuid(), os.getgid()
    mount = ["-v", f"{build_dir}:{CONTAINER_BUILD}", "-w", "/data"]
    if mode == "real":
        print(f"pulsar2.build: REAL Pulsar2 in {image_tag} ({why})", flush=True)
        script = 'pulsar2 build --config "$1"; rc=$?; chown -R "$2" "$3" 2>/dev/null; exit $rc'
        cmd = [docker_cmd(), "run", "--rm", *mount, "--entrypoint", "/bin/bash", image_tag, "-lc", script,
               "pulsar2-build", container_config, f"{uid}:{gid}", cfg["output_dir"]]
        header = f"# pulsar2.build: real Pulsar2 image {image_tag}"
        env = None
    else:
        print(BANNER, flush=True)
        header = "# pulsar2.build: PULSAR2 EMULATOR - NOT the Axera compiler\n" + BANNER
        if mode == "emulator-docker":
            cmd = [docker_cmd(), "run", "--rm", "--network", "none", "-u", f"{uid}:{gid}", "-e", "HOME=/tmp", *mount,
                   emu_image, "pulsar2", "build", "--config", container_config]
            env = None
        else:
            cmd = [sys.executable, "-m", "pulsar2.emulator", "build", "--config", str(args.config.resolve()),
                   "--data-root", str(build_dir)]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        print(f"pulsar2.build: {why}", flush=True)
    rc = run_logged(cmd, tmp_log, env=env, header=header)
    log_text = tmp_log.read_text(encoding="utf-8", errors="replace")
    out_dir.mkdir(parents=True, exist_ok=True)
    os.replace(tmp_log, out_dir / "build.log")
    problem = ""
    if rc != 0:
        problem = f"the compiler exited with status {rc}"
    elif not axm.is_file() or axm.stat().st_size == 0:
        problem = f"exit status 0 but {axm} is missing or empty"
    elif "Traceback (most recent call last)" in log_text:
        problem = "exit status 0 but the log contains a Python traceback"
    elif (mode == "real") == axmodel.is_emulated(axm):
        problem = f"{axm} is {'an EMULATED' if mode != 'real' else 'not an EMULATED'} axmodel after a {mode} build"
    if problem:
        if axm.exists():
            axm.unlink()
        raise BuildError(f"{problem}; log kept at {out_dir / 'build.log'}; compiled.axmodel removed")

    if mode == "real":
        compiler = {"name": "pulsar2", "version": real_version(image_tag)}
        image = image_tag
    else:
        meta, _ = axmodel.read_emulated(axm)
        name, _, version = str(meta["compiler"]).partition(" ")
        compiler = {"name": name, "version": version}
        image = emu_image or "local"
    inputs = [args.config]
    for p in (cfg["input"], *(ic.get("calibration_dataset", "") for ic in cfg["quant"].get("input_configs", []))):
        hp = host_path(p, build_dir) if p else None
        if hp is not None and hp.is_file():
            inputs.append(hp)
    man = manifest("pulsar2.build", inputs=inputs,
                   params={"choice": {k: chosen[k] for k in ("mode", "image", "image_id")}},
                   extra={
                       "emulated": mode != "real",
                       "mode": mode,
                       "selection": why,
                       "compiler": compiler,
                       "image": image,
                       "config_sha256": sha256_file(args.config),
                       "axmodel": str(args.out),
                       "axmodel_sha256": sha256_file(axm),
                       "axmodel_bytes": axm.stat().st_size,
                       "target_hardware": cfg.get("target_hardware", "AX650"),
                       "npu_mode": cfg.get("npu_mode", "NPU1"),
                   })
    atomic_write_json(out_dir / "manifest.json", man)
    kind = "EMULATED axmodel (board EMULATOR only)" if mode != "real" else "axmodel (real Pulsar2)"
    print(f"pulsar2.build: wrote {args.out} - {kind}, {compiler['name']} {compiler['version']}; manifest {out_dir / 'manifest.json'}")
    return man


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run Pulsar2 (real image if present, else the EMULATOR) on the config.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="generated build config (inside --build)")
    p.add_argument("--build", type=Path, required=True, help="build dir, mounted at /data/build")
    p.add_argument("--out", type=Path, required=True, help="compiled.axmodel path the config produces")
    p.add_argument("--choice", type=Path, required=True, help="the compiler choice stamp (python -m pulsar2.choice)")
    p.add_argument("--emulator-image-id", default="", help="file holding the emulator image id (runner docker)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        build(args)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
