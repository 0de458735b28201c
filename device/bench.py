"""bench: ``ax_run_model -m <model> -w W -r R`` on the board, its printout parsed to JSON.

The printout (Axera docs, the seed's M5Stack log)::

       Run AxModel:
             model: /root/kws_int8.axmodel
              type: Half
      ...
      pulsar2 ver: 4.2 751f68f9
      ---------------------------------------------------------------------------
      min =   1.056 ms   max =   1.079 ms   avg =   1.058 ms  median =   1.058 ms
       5% =   1.062 ms   90% =   1.057 ms   95% =   1.057 ms     99% =   1.056 ms

The percentile labels are unreliable (the seed shows P99 < P5): they are kept raw, and flagged when they
are not non-decreasing or fall outside [min, max].

Example (via invoke)::

    invoke bench --host 127.0.0.1 --port 2222 --key build/board-emulator/id_board --warmup 10 --repeat 100
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from fabric import Connection

from device.bundle import collect_bundle
from device.deploy import probe
from device.remote import script
from device.ssh import DeviceError, check_remote_root, run_script, tail

_FIELD = re.compile(r"^\s*([A-Za-z0-9 ]+?):\s(.*)$")
_NUM = r"([-+0-9.eE]+)\s*ms"
_BLOCK = re.compile(rf"min\s*=\s*{_NUM}\s+max\s*=\s*{_NUM}\s+avg\s*=\s*{_NUM}\s+median\s*=\s*{_NUM}")
_PCT = re.compile(rf"(\d+(?:\.\d+)?)%\s*=\s*{_NUM}")
_KEYS = {"model": "model", "type": "type", "vnpu": "vnpu", "affinity": "affinity", "warmup": "warmup",
         "repeat": "repeat", "batch": "batch", "pulsar2 ver": "pulsar2_version", "engine ver": "engine_version",
         "tool ver": "tool_version", "cmm size": "cmm_size"}


def parse_printout(text: str) -> dict[str, Any]:
    """Fields, timing block and raw percentiles from ax_run_model's text; DeviceError if no timing block."""
    out: dict[str, Any] = {"EMULATED": "EMULATOR" in text}
    for line in text.splitlines():
        m = _FIELD.match(line)
        if m and m.group(1).strip() in _KEYS and _KEYS[m.group(1).strip()] not in out:
            out[_KEYS[m.group(1).strip()]] = m.group(2).strip()
    for key in ("warmup", "repeat"):
        if str(out.get(key, "")).isdigit():
            out[key] = int(out[key])
    if "cmm_size" in out:
        m = re.match(r"(\d+)", out["cmm_size"])
        out["cmm_size_bytes"] = int(m.group(1)) if m else None
    if "type" in out:
        out["npu_mode"] = {"Half": "NPU1", "Full": "NPU2"}.get(out["type"])
    block = _BLOCK.search(text)
    if not block:
        raise DeviceError(f"no min/max/avg block in the ax_run_model printout:\n{tail(text)}")
    mn, mx, avg, med = (float(block.group(i)) for i in range(1, 5))
    out.update({"min_ms": mn, "max_ms": mx, "avg_ms": avg, "median_ms": med})
    after = text[block.end():]
    pct = {f"p{m.group(1)}": float(m.group(2)) for m in _PCT.finditer(after.split("----")[0])}
    values = [pct[k] for k in sorted(pct, key=lambda s: float(s[1:]))]
    problems = []
    if any(b < a for a, b in itertools.pairwise(values)):
        problems.append("percentiles decrease as the label increases")
    if any(v < mn - 1e-9 or v > mx + 1e-9 for v in values):
        problems.append("a percentile lies outside [min, max]")
    out["percentiles_raw_ms"] = pct
    out["percentiles_reliable"] = not problems and bool(pct)
    out["percentiles_note"] = ("; ".join(problems) + " - the tool's percentile labels are unreliable, use min/avg/median/max"
                               if problems else "labels look consistent (still unverified against the tool's source)")
    if out["EMULATED"]:
        out["note"] = "EMULATED: board emulator timings are ONNX Runtime on a CPU, not NPU latency"
    return out


def bench(conn: Connection, build: str | Path, remote_root: str, warmup: int = 10, repeat: int = 100) -> dict[str, Any]:
    """Run the deployed bundle's model with -w/-r on the board and parse the printout."""
    if warmup < 0 or repeat < 1:
        raise DeviceError(f"--warmup {warmup} / --repeat {repeat}: need warmup >= 0 and repeat >= 1")
    root = check_remote_root(remote_root)
    bundle = collect_bundle(build)
    board = probe(conn, root, bundle.bundle_id)
    if not board["bundle_present"]:
        raise DeviceError(f"{conn.host}: bundle {bundle.bundle_id} is not on the board under {root}; run invoke deploy first")
    if not board["ax_run_model"]:
        raise DeviceError(f"{conn.host}: ax_run_model not found on PATH or in /opt/bin on the board")
    model = f"{root}/{bundle.bundle_id}/model/compiled.axmodel"
    r = run_script(conn, script("bench"), [board["ax_run_model"], model, str(warmup), str(repeat)], "bench")
    if "[ERROR]" in r.stdout:
        raise DeviceError(f"{conn.host}: ax_run_model failed:\n{tail(r.stdout)}")
    parsed = parse_printout(r.stdout)
    return {"host": conn.host, "port": conn.port, "bundle_id": bundle.bundle_id, "exit_status": r.exited,
            "board": board, **parsed, "printout": r.stdout}
