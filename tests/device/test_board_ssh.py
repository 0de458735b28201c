"""deploy / eval-npu / bench against a real sshd on 127.0.0.1 serving the board emulator (no mocked Connection)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import paramiko
import pytest

from device.bench import bench
from device.bundle import COMPLETE_MARKER, collect_bundle
from device.deploy import deploy, verify
from device.evaluate import eval_npu
from device.ssh import DeviceError, connect, open_connection
from tests.device.conftest import board_spec

pytestmark = pytest.mark.ssh


def _calls(call_log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in call_log.read_text().splitlines() if line.strip()]


def test_deploy_is_atomic_verified_and_second_deploy_transfers_nothing(conn, build, remote_root):
    first = deploy(conn, build, str(remote_root))
    bundle = collect_bundle(build)
    assert first["status"] == "deployed" and first["transferred_bytes"] > 0
    dest = remote_root / bundle.bundle_id
    assert (dest / COMPLETE_MARKER).is_file()
    assert os.readlink(remote_root / "current") == bundle.bundle_id
    for rel, local in bundle.files.items():
        assert (dest / rel).read_bytes() == local.read_bytes(), rel
    assert b"\r" not in (dest / "list.txt").read_bytes()
    # nothing half-written is left behind: no staging dirs, no uploaded archive
    assert sorted(p.name for p in remote_root.iterdir()) == sorted([".incoming", "current", bundle.bundle_id])
    assert list((remote_root / ".incoming").iterdir()) == []

    second = deploy(conn, build, str(remote_root))
    assert second["status"] == "unchanged" and second["transferred_bytes"] == 0

    # changed artifacts -> a new versioned directory, and `current` moves to it
    p = build / "npu_inputs" / "input" / "0" / "input.bin"
    p.write_bytes(np.zeros(98 * 64, "<f4").tobytes())
    third = deploy(conn, build, str(remote_root))
    assert third["status"] == "deployed" and third["bundle_id"] != first["bundle_id"]
    assert os.readlink(remote_root / "current") == third["bundle_id"]
    assert (remote_root / first["bundle_id"] / COMPLETE_MARKER).is_file()


def test_eval_per_input_runs_one_process_per_input_and_batch_one_call(conn, build, remote_root, tmp_path, call_log):
    deploy(conn, build, str(remote_root))
    out = tmp_path / "device"
    rep = eval_npu(conn, build, str(remote_root), out, "board", mode="per-input")
    assert rep["mode"] == "per-input" and rep["n_inputs"] == 4 and rep["n_compared"] == 4 and rep["n_failed"] == 0
    assert rep["agreement"] == 1.0 and rep["max_abs_dlogit"] < 1e-4 and rep["min_cosine"] > 0.9999
    assert rep["EMULATED"] is True
    calls = _calls(call_log)
    assert sorted(k for _, k in calls) == [str(k) for k in range(4)]
    assert len({pid for pid, _ in calls}) == 4, "per-input mode must start ax_run_model once per input"
    run_dir = Path(rep["local_dir"])
    for name in ("report.json", "report.txt", "report.png", "state.json"):
        assert (run_dir / name).stat().st_size > 0
    assert json.loads((run_dir / "report.json").read_text())["agreement"] == 1.0
    assert "top-1 agreement NPU vs ONNX: 1.0000" in (run_dir / "report.txt").read_text()
    assert all(r["npu_ms"] is not None and r["wall_ms"] is not None for r in rep["inputs"])
    # the decoded logits are the board's output.bin bytes, and they match ONNX Runtime on the host
    remote_out = remote_root / rep["bundle_id"] / "runs" / "per-input" / "output" / "3" / "output.bin"
    assert (run_dir / "output" / "3" / "output.bin").read_bytes() == remote_out.read_bytes()

    call_log.write_text("")
    rep_b = eval_npu(conn, build, str(remote_root), out, "board", mode="batch")
    assert rep_b["mode"] == "batch" and rep_b["n_compared"] == 4 and rep_b["agreement"] == 1.0
    calls = _calls(call_log)
    assert len(calls) == 4 and len({pid for pid, _ in calls}) == 1, "batch mode must be one ax_run_model call"
    assert "mode batch" in (Path(rep_b["local_dir"]) / "report.txt").read_text()

    # a re-run with everything pulled runs nothing on the board
    call_log.write_text("")
    again = eval_npu(conn, build, str(remote_root), out, "board", mode="batch")
    assert again["this_call"]["requested"] == 0 and _calls(call_log) == [] and again["n_compared"] == 4

    # --fresh forgets the run on both sides and evaluates everything again
    fresh = eval_npu(conn, build, str(remote_root), out, "board", mode="batch", fresh=True)
    assert fresh["this_call"]["requested"] == 4 and fresh["this_call"]["skipped_on_board"] == 0
    assert len(_calls(call_log)) == 4 and fresh["n_compared"] == 4


def test_unknown_host_key_is_refused_without_the_flag(loopback_board, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    spec = board_spec(loopback_board, known_hosts=str(empty))
    with pytest.raises(DeviceError, match="--accept-new-host-key"):
        open_connection(connect(spec))
    missing = board_spec(loopback_board, known_hosts=str(tmp_path / "nope"))
    with pytest.raises(DeviceError, match="known_hosts file not found"):
        connect(missing)

    c = open_connection(connect(board_spec(loopback_board, known_hosts=str(empty), accept_new_host_key=True)))
    assert c.run("echo ok", hide=True, in_stream=False).stdout.strip() == "ok"
    c.close()
    assert f"[127.0.0.1]:{loopback_board.port} ssh-ed25519 " in empty.read_text()
    c = open_connection(connect(spec))  # now known: no flag needed
    c.close()

    # a CHANGED key is refused even with the flag
    other = paramiko.Ed25519Key.from_private_key_file(str(loopback_board.client_key("plain")))
    changed = tmp_path / "changed"
    changed.write_text(f"[127.0.0.1]:{loopback_board.port} ssh-ed25519 {other.get_base64()}\n")
    with pytest.raises(DeviceError, match="CHANGED"):
        open_connection(connect(board_spec(loopback_board, known_hosts=str(changed), accept_new_host_key=True)))


def test_remote_root_with_space_and_quote_and_nothing_outside_it(conn, build, tmp_path):
    parent = tmp_path / "boards"
    parent.mkdir()
    root = parent / "it's a \"kws\" dir; $(touch pwned)"
    before = {p.name for p in parent.iterdir()}
    deploy(conn, build, str(root))
    rep = eval_npu(conn, build, str(root), tmp_path / "device", "board", limit=2)
    assert rep["n_compared"] == 2 and rep["agreement"] == 1.0
    assert {p.name for p in parent.iterdir()} - before == {root.name}
    assert not (Path.home() / "pwned").exists() and not (parent / "pwned").exists()
    assert (root / rep["bundle_id"] / "runs" / "per-input" / "output" / "1" / "output.bin").is_file()


def test_a_world_writable_remote_root_is_refused(conn, build, tmp_path):
    root = tmp_path / "shared-root"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(DeviceError, match="writable by every user of the board"):
        deploy(conn, build, str(root))
    assert list(root.iterdir()) == []
    root.chmod(0o755)
    assert deploy(conn, build, str(root))["status"] == "deployed"


def test_emulated_axmodel_refused_for_a_board_that_is_not_the_emulator(loopback_board, build, remote_root):
    c = open_connection(connect(board_spec(loopback_board, client="plain")))
    try:
        with pytest.raises(DeviceError, match="EMULATED axmodel"):
            deploy(c, build, str(remote_root))
        assert not remote_root.exists() or not any(p.name not in (".incoming",) for p in remote_root.iterdir())
        res = deploy(c, build, str(remote_root), allow_emulated=True)
        assert res["status"] == "deployed" and res["board"]["emulator"] is False
    finally:
        c.close()


def test_bench_parses_the_printout(conn, build, remote_root):
    deploy(conn, build, str(remote_root))
    r = bench(conn, build, str(remote_root), warmup=2, repeat=30)
    assert r["type"] == "Half" and r["npu_mode"] == "NPU1" and r["EMULATED"] is True
    assert r["repeat"] == 30 and r["warmup"] == 2
    assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["min_ms"] <= r["avg_ms"] <= r["max_ms"]
    assert set(r["percentiles_raw_ms"]) == {"p5", "p90", "p95", "p99"}
    assert "EMULATOR" in r["tool_version"]


def test_board_emulator_task_falls_back_to_a_local_sshd_and_prints_working_options(tmp_path, capsys):
    from invoke import MockContext, Result

    from device import tasks as board_tasks
    from device.emulator.launch import free_port
    from device.ssh import BoardSpec

    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("sshd not found: apt-get install openssh-server (CI installs it)")
    port = free_port()
    no_docker = MockContext(run={"docker info --format '{{.ServerVersion}}'": Result(exited=1)})
    state = tmp_path / "emu"
    board_tasks.emulator(no_docker, port=port, state=str(state))
    try:
        printed = capsys.readouterr().out
        assert "local sshd pid" in printed and f"127.0.0.1:{port}" in printed
        assert f"--key {state / 'id_board'}" in printed and f"--remote-root {state / 'remote'}" in printed
        spec = BoardSpec("127.0.0.1", port, key_filename=str(state / "id_board"), known_hosts=str(state / "known_hosts"))
        c = open_connection(connect(spec))
        out = c.run("ax_run_model --help", hide=True, in_stream=False).stdout
        c.close()
        assert "EMULATOR" in out
    finally:
        board_tasks.emulator(no_docker, stop=True, state=str(state))
    assert "stopped" in capsys.readouterr().out
    assert not (state / "endpoint.json").exists()


def test_a_damaged_board_copy_is_detected_and_replaced(conn, build, remote_root):
    first = deploy(conn, build, str(remote_root))
    model = remote_root / first["bundle_id"] / "model" / "compiled.axmodel"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte on the board
    model.write_bytes(bytes(data))
    assert verify(conn, str(remote_root))["damaged"] == ["model/compiled.axmodel: FAILED"]
    again = deploy(conn, build, str(remote_root))
    assert again["status"] == "deployed" and again["replaced"] == "damaged" and again["transferred_bytes"] > 0
    assert model.read_bytes() == (build / "pulsar2" / "output" / "compiled.axmodel").read_bytes()
    assert verify(conn, str(remote_root)) == {"host": "127.0.0.1", "bundle_id": first["bundle_id"],
                                             "files": len(collect_bundle(build).files), "damaged": []}
    assert deploy(conn, build, str(remote_root))["status"] == "unchanged"
    forced = deploy(conn, build, str(remote_root), force=True)
    assert forced["status"] == "deployed" and forced["replaced"] == "forced"
    assert sorted(p.name for p in remote_root.iterdir()) == sorted([".incoming", "current", first["bundle_id"]])


def test_verify_without_a_deployed_bundle_says_so(conn, remote_root):
    remote_root.mkdir(parents=True)
    with pytest.raises(DeviceError, match="nothing deployed.*run invoke deploy"):
        verify(conn, str(remote_root))


def test_a_full_board_disk_is_named_and_nothing_is_left_behind(conn, build, tmp_path):
    root = tmp_path / "small"
    root.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with pytest.raises(DeviceError, match=r"disk full on the board: need [\d.]+ MB in .*, have 0\.\d MB"):
            deploy(conn, build, str(root / "kws"))
        assert list((root / "kws" / ".incoming").iterdir()) == []
    finally:
        subprocess.run(["umount", str(root)], check=True)
