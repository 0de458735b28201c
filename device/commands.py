"""What the invoke tasks do, as plain functions: targets from options, per-board work in parallel, summaries.

Every function takes BoardSpecs (or connections) and paths and returns data; the tasks in device/tasks.py
only parse options, call one of these and print the returned text.

Example::

    python -c "from device.commands import board_specs; print(board_specs(host='127.0.0.1', port=2222, key='k'))"
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fabric import Connection

from device import bench as bench_mod
from device import deploy as deploy_mod
from device import evaluate as eval_mod
from device.fleet import each, group_for, parse_hosts, specs_for
from device.ssh import (
    DEFAULT_KNOWN_HOSTS,
    DEFAULT_REMOTE_ROOT,
    DEFAULT_USER,
    BoardSpec,
    DeviceError,
    check_remote_root,
    resolve_password,
)
from pipeline.core.io import atomic_write_json, atomic_write_text

OUT_DIR = "device"  # under the build folder: build/device/<host>/...


def board_specs(
    host: str | None = None, hosts: str | None = None, port: int | None = None, user: str | None = None,
    key: str | None = None, known_hosts: str | None = None, accept_new_host_key: bool = False,
    password_prompt: bool = False, defaults: Mapping[str, Any] | None = None,
) -> list[BoardSpec]:
    """Board specs from task options, falling back to ``defaults`` (invoke.yaml ``board:``) then built-ins."""
    d = dict(defaults or {})
    port = int(port or d.get("port") or 22)
    if host and hosts:
        raise DeviceError("give --host or --hosts, not both")
    targets = parse_hosts(hosts, port) if hosts else [(host or d.get("host") or "", port)]
    if not targets[0][0]:
        raise DeviceError("no board given; pass --host H (or --hosts a,b,c, or set board.host in invoke.yaml)")
    template = BoardSpec(
        host=targets[0][0], port=port, user=user or d.get("user") or DEFAULT_USER,
        key_filename=key or d.get("key"), known_hosts=known_hosts or d.get("known_hosts") or DEFAULT_KNOWN_HOSTS,
        accept_new_host_key=accept_new_host_key,
        password=resolve_password(password_prompt, who=",".join(h for h, _ in targets)),
    )
    return specs_for(targets, template)


def _per_board(specs: list[BoardSpec], fn: Callable[[Connection, BoardSpec], dict[str, Any]]) -> dict[str, Any]:
    """label -> result dict, or {"error": "..."} for a board that failed (the others go on)."""
    group, spec_of = group_for(specs)
    results = each(group, lambda conn: fn(conn, spec_of[conn]))
    out: dict[str, Any] = {}
    for conn, value in results.items():
        label = spec_of[conn].label
        if isinstance(value, BaseException):
            if not isinstance(value, DeviceError):
                value = DeviceError(f"{label}: {type(value).__name__}: {value}")
            out[label] = {"error": str(value)}
        else:
            out[label] = value
    return out


def deploy_boards(specs: list[BoardSpec], build: str, remote_root: str | None, allow_emulated: bool = False,
                  force: bool = False) -> dict[str, Any]:
    root = check_remote_root(remote_root or DEFAULT_REMOTE_ROOT)

    def one(conn: Connection, spec: BoardSpec) -> dict[str, Any]:
        result = deploy_mod.deploy(conn, build, root, allow_emulated=allow_emulated, force=force)
        atomic_write_json(Path(build) / OUT_DIR / spec.label / "deploy.json", result)
        return result

    return _per_board(specs, one)


def eval_boards(
    specs: list[BoardSpec], build: str, remote_root: str | None, mode: str = "per-input", limit: int | None = None,
    fresh: bool = False, allow_emulated: bool = False, deploy_first: bool = False,
) -> dict[str, Any]:
    root = check_remote_root(remote_root or DEFAULT_REMOTE_ROOT)
    out_dir = Path(build) / OUT_DIR

    def one(conn: Connection, spec: BoardSpec) -> dict[str, Any]:
        if deploy_first:
            deploy_mod.deploy(conn, build, root, allow_emulated=allow_emulated)
        rep = eval_mod.eval_npu(conn, build, root, out_dir, spec.label, mode=mode, limit=limit, fresh=fresh,
                                allow_emulated=allow_emulated)
        return {k: v for k, v in rep.items() if k not in ("inputs",)}

    results = _per_board(specs, one)
    summary = {
        "mode": mode, "boards": len(results), "failed_boards": sorted(k for k, v in results.items() if "error" in v),
        "per_board": {k: ({"error": v["error"]} if "error" in v else {
            key: v[key] for key in ("bundle_id", "n_inputs", "n_compared", "n_failed", "agreement", "n_decided",
                                    "agreement_decided", "npu_accuracy",
                                    "onnx_accuracy", "max_abs_dlogit", "min_cosine", "EMULATED", "local_dir")
        }) for k, v in results.items()},
    }
    atomic_write_json(out_dir / f"summary-{mode}.json", summary)
    atomic_write_text(out_dir / f"summary-{mode}.txt", format_eval(results))
    return results


def verify_boards(specs: list[BoardSpec], remote_root: str | None) -> dict[str, Any]:
    root = check_remote_root(remote_root or DEFAULT_REMOTE_ROOT)
    return _per_board(specs, lambda conn, spec: deploy_mod.verify(conn, root))


def format_verify(results: Mapping[str, Any]) -> str:
    lines = []
    for label, r in sorted(results.items()):
        if "error" in r:
            lines.append(f"{label}: FAILED: {r['error']}")
        elif r["damaged"]:
            lines.append(f"{label}: DAMAGED: {'; '.join(r['damaged'])} (invoke deploy replaces the damaged copy)")
        else:
            lines.append(f"{label}: bundle {r['bundle_id']} intact ({r['files']} files match SHA256SUMS)")
    return "\n".join(lines)


def bench_boards(specs: list[BoardSpec], build: str, remote_root: str | None, warmup: int, repeat: int) -> dict[str, Any]:
    root = check_remote_root(remote_root or DEFAULT_REMOTE_ROOT)

    def one(conn: Connection, spec: BoardSpec) -> dict[str, Any]:
        result = bench_mod.bench(conn, build, root, warmup=warmup, repeat=repeat)
        atomic_write_json(Path(build) / OUT_DIR / spec.label / result["bundle_id"] / "bench.json", result)
        return result

    return _per_board(specs, one)


def failed(results: Mapping[str, Any]) -> list[str]:
    return sorted(k for k, v in results.items() if "error" in v)


def failed_inputs(results: Mapping[str, Any], allowed: int) -> str:
    """'host: 48 of 48' for every board where more inputs failed than ``allowed``; '' if none."""
    return ", ".join(f"{label}: {r['n_failed']} of {r['n_inputs']}" for label, r in sorted(results.items())
                     if "error" not in r and (r["n_failed"] > allowed or r["n_compared"] == 0))


def format_deploy(results: Mapping[str, Any]) -> str:
    lines = []
    for label, r in sorted(results.items()):
        if "error" in r:
            lines.append(f"{label}: FAILED: {r['error']}")
        elif r["status"] == "unchanged":
            lines.append(f"{label}: bundle {r['bundle_id']} already at {r['remote_dir']}; nothing transferred")
        else:
            again = {"damaged": " (the board's copy was damaged: replaced)", "forced": " (--force: replaced)"}
            lines.append(f"{label}: deployed bundle {r['bundle_id']} to {r['remote_dir']} "
                         f"({r['files']} files, {r['transferred_bytes']} bytes in one archive, sha256 verified on the board)"
                         + again.get(r.get("replaced", ""), ""))
        if "error" not in r and r["emulated_axmodel"]:
            lines[-1] += " [EMULATED axmodel]"
    return "\n".join(lines)


def format_eval(results: Mapping[str, Any]) -> str:
    lines = []
    for label, r in sorted(results.items()):
        if "error" in r:
            lines.append(f"{label}: FAILED: {r['error']}")
            continue
        emu = " [EMULATED]" if r.get("EMULATED") else ""
        fmt = lambda x: "-" if x is None else f"{x:.4f}"
        lines.append(
            f"{label}: {r['mode']} mode{emu}: {r['n_compared']}/{r['n_inputs']} inputs compared, {r['n_failed']} failed; "
            f"top-1 agreement NPU vs ONNX {fmt(r['agreement'])} (decided inputs {fmt(r.get('agreement_decided'))}); accuracy NPU {fmt(r['npu_accuracy'])} "
            f"ONNX {fmt(r['onnx_accuracy'])}; max |dlogit| {fmt(r['max_abs_dlogit'])}\n"
            f"    report: {r['local_dir']}/report.txt (.json, .png)"
        )
    return "\n".join(lines) + "\n"


def format_bench(results: Mapping[str, Any]) -> str:
    lines = []
    for label, r in sorted(results.items()):
        if "error" in r:
            lines.append(f"{label}: FAILED: {r['error']}")
            continue
        lines.append(
            f"{label}: {r.get('model')} type {r.get('type')} ({r.get('npu_mode')}): min {r['min_ms']:.3f} avg {r['avg_ms']:.3f} "
            f"median {r['median_ms']:.3f} max {r['max_ms']:.3f} ms; percentiles raw {json.dumps(r['percentiles_raw_ms'])} "
            f"({'consistent' if r['percentiles_reliable'] else 'UNRELIABLE: ' + r['percentiles_note']})"
            + (" [EMULATED]" if r["EMULATED"] else "")
        )
    return "\n".join(lines)
