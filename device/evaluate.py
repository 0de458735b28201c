"""eval-npu: run every board input through ``ax_run_model`` on the board, pull the logits, compare with ONNX.

Per-input mode (default, the mission's workaround): one remote shell script loops over the inputs and runs
``ax_run_model -m … -i <bundle>/input/ -o <tmp>/ -l <one-entry LF list>`` once per input; batch mode runs
all inputs in one call with one LF list. Each finished input is committed on the board by renaming its
``output/<k>`` folder into ``<bundle>/runs/<run-id>/`` (plus ``logs/<k>.txt`` with a status line), so a
dropped connection or a reboot never leaves a half output; the script skips inputs whose output is
complete and holds a lock (flock) so a re-run waits for a still-running old loop. All new outputs come
back in ONE tar over SFTP and are kept under ``build/device/<host>/<bundle-id>/<run-id>/``; a re-run asks
the board only for inputs that are not there yet. Then: softmax, ONNX Runtime on the same input.bin
files, and the report (device.report).

Example (via invoke)::

    invoke eval-npu --host 127.0.0.1 --port 2222 --key build/board-emulator/id_board --limit 50
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fabric import Connection

from device.bundle import Bundle, collect_bundle
from device.deploy import probe
from device.remote import script
from device.report import compute_report, write_report
from device.ssh import ConnectionLost, DeviceError, check_remote_root, run_script, tail
from pipeline.core.io import atomic_write_json

log = logging.getLogger(__name__)

MODES = ("per-input", "batch")



def _status_line(text: str) -> dict[str, Any]:
    """The board's verdict for one input: the last ``status\t…`` line of logs/<k>.txt, plus the tool's avg ms."""
    lines = text.splitlines()
    first = next((ln for ln in reversed(lines) if ln.startswith("status\t")), "")
    parts = first.split("\t")
    if len(parts) < 5:
        return {"status": "fail", "error": f"no status line in the board log (last line {lines[-1:]!r})"}
    status, rc, ms, why = parts[1], parts[2], parts[3], parts[4]
    out: dict[str, Any] = {"status": status, "exit_status": int(rc) if rc.lstrip("-").isdigit() else None}
    wall = int(ms) if ms.lstrip("-").isdigit() else -1
    out["wall_ms"] = wall if wall >= 0 else None
    if why != "-":
        out["error"] = why
    for line in text.splitlines():
        if "avg =" in line and "min =" in line:
            try:
                out["npu_ms"] = float(line.split("avg =")[1].split("ms")[0])
            except ValueError:
                pass
    if status != "ok":
        out["log_tail"] = tail("\n".join(ln for ln in lines if not ln.startswith("status\t")), 6)
    return out


class LocalRun:
    """The local copy of one run: ``output/<k>/output.bin``, ``logs/<k>.txt`` and ``state.json``."""

    def __init__(self, path: Path, n_bytes: int) -> None:
        self.path = path
        self.n_bytes = n_bytes
        self.state_path = path / "state.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.state.setdefault("inputs", {})

    def output(self, k: str) -> Path:
        return self.path / "output" / k / "output.bin"

    def complete(self, k: str) -> bool:
        p = self.output(k)
        return p.is_file() and p.stat().st_size == self.n_bytes

    def absorb(self, tar_path: Path, ids: list[str]) -> None:
        """Extract a pulled tar into place (output folders replaced whole) and update state.json."""
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=self.path) as tmp:
            with tarfile.open(tar_path) as tar:
                tar.extractall(tmp, filter="data")
            t = Path(tmp)
            for k in ids:
                log_file = t / "logs" / f"{k}.txt"
                if log_file.is_file():
                    (self.path / "logs").mkdir(parents=True, exist_ok=True)
                    shutil.move(str(log_file), self.path / "logs" / f"{k}.txt")
                    self.state["inputs"][k] = _status_line((self.path / "logs" / f"{k}.txt").read_text(errors="replace"))
                src = t / "output" / k
                if (src / "output.bin").is_file():
                    dst = self.path / "output" / k
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(dst, ignore_errors=True)
                    shutil.move(str(src), dst)
            if (t / "logs" / "batch.txt").is_file():
                shutil.move(str(t / "logs" / "batch.txt"), self.path / "logs" / "batch.txt")
        self.save()

    def save(self) -> None:
        atomic_write_json(self.state_path, self.state)


def _remote_paths(root: str, bundle_id: str, run_id: str) -> tuple[str, str]:
    return f"{root}/{bundle_id}", f"{root}/{bundle_id}/runs/{run_id}"


def _load_inputs(bundle: Bundle, ids: list[str]) -> np.ndarray:
    return np.stack([np.fromfile(bundle.input_path(k), dtype="<f4").reshape(bundle.input_shape[1:]) for k in ids])


def run_on_board(
    conn: Connection, bundle: Bundle, root: str, run: LocalRun, ids: list[str], mode: str, fresh: bool,
    allow_emulated: bool = False,
) -> dict[str, Any]:
    """Run the inputs of ``ids`` that are not complete locally; pull the new outputs in one tar."""
    t0 = time.perf_counter()
    board = probe(conn, root, bundle.bundle_id)
    seconds = {"probe": round(time.perf_counter() - t0, 3)}
    if not board["bundle_present"]:
        raise DeviceError(f"{conn.host}: bundle {bundle.bundle_id} is not on the board under {root}; run invoke deploy first")
    if bundle.emulated and not board["emulator"] and not allow_emulated:
        raise DeviceError(f"{conn.host}: the deployed axmodel is EMULATED and the board is not the emulator; "
                          "pass --allow-emulated to run it anyway")
    if not board["ax_run_model"]:
        raise DeviceError(f"{conn.host}: ax_run_model not found on PATH or in /opt/bin on the board")
    todo = [k for k in ids if fresh or not run.complete(k)]
    info: dict[str, Any] = {"board": board, "requested": len(todo), "ran": 0, "skipped_on_board": 0, "failed": 0,
                            "seconds": seconds}
    if not todo:
        log.info("%s: all %d inputs already pulled; nothing to run", conn.host, len(ids))
        return info
    bundle_dir, run_dir = _remote_paths(root, bundle.bundle_id, run.path.name)
    log.info("%s: running %d input(s) on the board (%s mode)", conn.host, len(todo), mode)
    pull_name = f"pull-{secrets.token_hex(6)}.tar"  # unique: two evals of one run dir never share a tar
    args = [mode, bundle_dir, run_dir, str(run.n_bytes), board["ax_run_model"], "1" if fresh else "0", pull_name, *todo]
    t0 = time.perf_counter()
    try:
        r = run_script(conn, script("eval"), args, "eval-npu", shell="bash")
    except ConnectionLost as e:
        raise ConnectionLost(
            f"{e}; the outputs finished so far stay on the board and in {run.path} - re-run the same command "
            "to finish the missing inputs"
        ) from None
    if r.exited != 0:
        raise DeviceError(f"{conn.host}: eval-npu script failed (exit {r.exited}): {tail(r.stderr or r.stdout)}")
    seconds["board_loop"] = round(time.perf_counter() - t0, 3)
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "KWS":
            if parts[1] == "ok":
                info["ran"] += 1
            elif parts[1] == "fail":
                info["ran"] += 1
                info["failed"] += 1
            elif parts[1] == "skip":
                info["skipped_on_board"] += 1
            elif parts[1] == "batch":
                info["batch_wall_ms"] = int(parts[2])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kws-pull-") as tmp:
        local_tar = Path(tmp) / "pull.tar"
        try:
            conn.get(f"{run_dir}/{pull_name}", str(local_tar))
            conn.sftp().remove(f"{run_dir}/{pull_name}")
        except (OSError, EOFError) as e:
            raise ConnectionLost(f"{conn.host}: pulling {run_dir}/{pull_name} failed ({e}); re-run to pull again") from None
        info["pulled_bytes"] = local_tar.stat().st_size
        run.absorb(local_tar, todo)
    seconds["pull"] = round(time.perf_counter() - t0, 3)
    if "batch_wall_ms" in info:
        run.state["batch_wall_ms"] = info["batch_wall_ms"]
        run.save()
    return info


def eval_npu(
    conn: Connection, build: str | Path, remote_root: str, out_dir: str | Path, host_label: str,
    mode: str = "per-input", limit: int | None = None, fresh: bool = False, allow_emulated: bool = False,
    onnx_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate on the board, compare with ONNX on the host, write report.{json,txt,png}; returns the report."""
    from pipeline.model.infer import OnnxModel

    if mode not in MODES:
        raise DeviceError(f"--mode {mode!r}: expected one of {list(MODES)}")
    root = check_remote_root(remote_root)
    build = Path(build)
    bundle = collect_bundle(build)
    onnx = OnnxModel(onnx_path or build / "model" / "kws.onnx")
    manifest_classes = json.loads(bundle.files["manifest.json"].read_text()).get("classes")
    if manifest_classes is not None and list(manifest_classes) != list(onnx.classes):
        raise DeviceError(f"{bundle.files['manifest.json']}: classes {manifest_classes} differ from {onnx.path}'s "
                          f"{onnx.classes}; rebuild the board inputs and the model from the same features (make all)")
    ids = bundle.ids[:limit] if limit else list(bundle.ids)
    run_path = Path(out_dir) / host_label / bundle.bundle_id / mode
    previous = None  # --fresh: the last run's outputs are kept aside until this one has its report
    if fresh and run_path.exists():
        previous = run_path.with_name(f".{run_path.name}.previous-{os.getpid()}")
        os.replace(run_path, previous)
    try:
        run_path.mkdir(parents=True, exist_ok=True)
        run = LocalRun(run_path, 4 * onnx.n_classes)
        run.state.update({"bundle_id": bundle.bundle_id, "mode": mode, "host": conn.host, "port": conn.port})
        board_info = run_on_board(conn, bundle, root, run, ids, mode, fresh, allow_emulated)
        ok_ids = [k for k in ids if run.complete(k)]
        npu = {k: np.frombuffer(run.output(k).read_bytes(), dtype="<f4").astype(np.float32) for k in ok_ids}
        onnx_logits = onnx.logits(_load_inputs(bundle, ids)) if ids else np.zeros((0, onnx.n_classes), np.float32)
        host = dict(zip(ids, onnx_logits))
        report = compute_report(
            ids=ids, labels=bundle.labels, classes=onnx.classes, npu_logits=npu, onnx_logits=host,
            state=run.state["inputs"], meta={
                "host": conn.host, "port": conn.port, "bundle_id": bundle.bundle_id, "mode": mode,
                "emulated_axmodel": bundle.emulated, "board_is_emulator": board_info["board"]["emulator"],
                "board": board_info["board"], "this_call": {k: v for k, v in board_info.items() if k != "board"},
                "batch_wall_ms": run.state.get("batch_wall_ms"), "onnx": str(onnx.path), "local_dir": str(run_path),
            },
        )
        write_report(report, run_path, npu, host)
    except BaseException:
        if previous is not None:
            shutil.rmtree(run_path, ignore_errors=True)
            os.replace(previous, run_path)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return report
