"""eval-npu resume after a dropped connection, a failing input, and a fleet - real sshd on 127.0.0.1, emulator."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from device.bundle import collect_bundle
from device.commands import eval_boards
from device.deploy import deploy
from device.evaluate import eval_npu
from device.ssh import ConnectionLost, connect, open_connection
from tests.conftest import ROOT
from tests.device.conftest import board_spec
from tests.device.tiny_model import make_build

pytestmark = pytest.mark.ssh


def _calls(call_log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in call_log.read_text().splitlines() if line.strip()]


def test_killed_connection_then_rerun_evaluates_every_input_exactly_once(
        loopback_board, build, remote_root, tmp_path, call_log):
    build = make_build(build, n_inputs=6)
    spec = board_spec(loopback_board)
    c1 = open_connection(connect(spec))
    deploy(c1, build, str(remote_root))
    bundle_id = collect_bundle(build).bundle_id
    remote_out = remote_root / bundle_id / "runs" / "per-input" / "output"
    out = tmp_path / "device"
    errors: list[BaseException] = []

    def first_run():
        try:
            eval_npu(c1, build, str(remote_root), out, "board")
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    t = threading.Thread(target=first_run)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (remote_out.is_dir() and len(list(remote_out.iterdir())) >= 2):
        time.sleep(0.05)
    assert remote_out.is_dir() and len(list(remote_out.iterdir())) >= 2
    for pid in loopback_board.session_pids():  # drop every SSH session: the link dies mid-run
        os.kill(pid, signal.SIGKILL)
    t.join(60)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], ConnectionLost), errors
    assert "re-run" in str(errors[0])
    done_before = len(list(remote_out.iterdir()))
    assert done_before < 6

    c2 = open_connection(connect(spec))
    rep = eval_npu(c2, build, str(remote_root), out, "board")
    c2.close()
    assert rep["n_compared"] == 6 and rep["n_failed"] == 0 and rep["agreement"] == 1.0
    counts = collections.Counter(k for _, k in _calls(call_log))
    assert counts == collections.Counter(str(k) for k in range(6)), counts
    assert rep["this_call"]["skipped_on_board"] >= 2  # finished before the drop: pulled, not re-run


def test_failing_input_is_recorded_and_the_rest_go_on(conn, build, remote_root, tmp_path):
    res = deploy(conn, build, str(remote_root))
    bad = remote_root / res["bundle_id"] / "input" / "2" / "input.bin"
    bad.write_bytes(bad.read_bytes()[:1000])  # corrupt on the board: truncated
    for mode in ("per-input", "batch"):
        rep = eval_npu(conn, build, str(remote_root), tmp_path / "device", "board", mode=mode)
        assert rep["n_failed"] == 1 and rep["n_compared"] == 3, mode
        assert rep["failed"][0]["k"] == "2"
        assert rep["agreement"] == 1.0
        assert "failed inputs: 1" in (Path(rep["local_dir"]) / "report.txt").read_text()
    assert "input.bin" in rep["failed"][0]["log_tail"] or "output.bin" in rep["failed"][0]["error"]


def test_fleet_two_boards_one_report_each_and_a_summary(loopback_board, build, tmp_path):
    # two names for the same loopback endpoint stand in for two boards (traffic stays on 127.0.0.1)
    known = tmp_path / "known_hosts"
    line = loopback_board.known_hosts.read_text().strip()
    known.write_text(line + "\n" + line.replace("[127.0.0.1]", "[localhost]", 1) + "\n")
    spec = board_spec(loopback_board, known_hosts=str(known))
    specs = [spec, dataclasses.replace(spec, host="localhost")]
    root = tmp_path / "fleet root"
    results = eval_boards(specs, str(build), str(root), limit=3, deploy_first=True)
    assert set(results) == {spec.label, f"localhost_{spec.port}"}
    for r in results.values():
        assert "error" not in r, r
        assert r["n_compared"] == 3 and r["agreement"] == 1.0
        assert (Path(r["local_dir"]) / "report.json").is_file()
    summary = json.loads((build / "device" / "summary-per-input.json").read_text())
    assert summary["boards"] == 2 and summary["failed_boards"] == []


def _invoke(board, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args, "--host", "127.0.0.1", "--port", str(board.port),
                           "--key", str(board.client_key()), "--known-hosts", str(board.known_hosts)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_eval_npu_exits_non_zero_when_inputs_fail(conn, build, remote_root, loopback_board):
    res = deploy(conn, build, str(remote_root))
    where = ["--build", str(build), "--remote-root", str(remote_root)]
    bad = remote_root / res["bundle_id"] / "input" / "2" / "input.bin"
    bad.write_bytes(bad.read_bytes()[:1000])
    r = _invoke(loopback_board, "eval-npu", *where, "--fresh")
    assert r.returncode == 2 and "failed inputs:" in r.stderr and "1 of 4" in r.stderr and "--allow-failures" in r.stderr
    assert _invoke(loopback_board, "eval-npu", *where, "--fresh", "--allow-failures", "1").returncode == 0
    for k in range(4):  # every input fails: never a pass, whatever is allowed
        p = remote_root / res["bundle_id"] / "input" / str(k) / "input.bin"
        p.write_bytes(b"\0" * 10)
    r = _invoke(loopback_board, "eval-npu", *where, "--fresh", "--allow-failures", "10")
    assert r.returncode == 2 and "4 of 4" in r.stderr, r.stdout + r.stderr
