"""MockContext tests: which commands the tasks and board functions run (no network, no sshd)."""

from __future__ import annotations

import re
import shlex
import socket
import threading

import pytest
from invoke import Config, MockContext, Result
from invoke.exceptions import Exit

from device import tasks as board_tasks
from device.bench import bench
from device.bundle import COMPLETE_MARKER, SUMS_NAME, collect_bundle
from device.commands import board_specs
from device.deploy import deploy
from device.fleet import parse_hosts
from device.remote import script
from device.ssh import DeviceError, script_command
from tests.device.tiny_model import make_build

SEED_PRINTOUT = """   Run AxModel:
         model: /root/kws_int8.axmodel
          type: Half
          vnpu: Disable
      affinity: 0b01
        warmup: 10
        repeat: 100
         batch: { auto: 0 }
   pulsar2 ver: 4.2 751f68f9
    engine ver: 2.6.3sp
      tool ver: 2.3.3sp
      cmm size: 748716 Bytes
  ---------------------------------------------------------------------------
  min =   1.056 ms   max =   1.079 ms   avg =   1.058 ms  median =   1.058 ms
   5% =   1.062 ms   90% =   1.057 ms   95% =   1.057 ms     99% =   1.056 ms
  ---------------------------------------------------------------------------
"""
PROBE_RE = re.compile(r"(?s)sh -c .*echo \"ax_run_model=")
BENCH_RE = re.compile(r"(?s)sh -c .*-w \"\$w\" -r \"\$r\"")


def probe_result(bundle_id: str, emulator: bool, present: bool = True) -> Result:
    return Result(f"ax_run_model=/opt/bin/ax_run_model\nemulator={int(emulator)}\n"
                  f"bundle={'present' if present else 'absent'}\ncurrent={bundle_id}\nhostname=m5stack-LLM\narch=aarch64\n")


def test_bench_runs_ax_run_model_with_w_r_on_the_quoted_bundle_model(tmp_path):
    build = make_build(tmp_path / "b", n_inputs=2)
    bid = collect_bundle(build).bundle_id
    c = MockContext(run={PROBE_RE: probe_result(bid, emulator=False), BENCH_RE: Result(SEED_PRINTOUT)})
    c.host, c.port = "board", 22
    r = bench(c, build, "/opt/my kws", warmup=10, repeat=100)
    calls = [call.args[0] for call in c.run.call_args_list]
    assert calls[0] == script_command(script("probe"), ["/opt/my kws", bid, "0", "0", COMPLETE_MARKER, SUMS_NAME])
    assert calls[1] == script_command(script("bench"), ["/opt/bin/ax_run_model", f"/opt/my kws/{bid}/model/compiled.axmodel", "10", "100"])
    assert shlex.split(calls[1])[4:] == ["/opt/bin/ax_run_model", f"/opt/my kws/{bid}/model/compiled.axmodel", "10", "100"]
    assert 'ax=$1 model=$2 w=$3 r=$4\n"$ax" -m "$model" -w "$w" -r "$r"' in script("bench")
    assert r["type"] == "Half" and r["npu_mode"] == "NPU1" and r["avg_ms"] == 1.058 and r["median_ms"] == 1.058
    assert r["pulsar2_version"] == "4.2 751f68f9" and r["tool_version"] == "2.3.3sp" and r["cmm_size_bytes"] == 748716
    assert r["percentiles_raw_ms"] == {"p5": 1.062, "p90": 1.057, "p95": 1.057, "p99": 1.056}
    assert r["percentiles_reliable"] is False and not r["EMULATED"]


def test_deploy_of_an_unchanged_bundle_runs_only_the_probe(tmp_path):
    build = make_build(tmp_path / "b", n_inputs=2)
    bid = collect_bundle(build).bundle_id
    c = MockContext(run={PROBE_RE: probe_result(bid, emulator=True)})
    c.host, c.port = "board", 22
    res = deploy(c, build, "/opt/kws")
    assert res["status"] == "unchanged" and res["transferred_bytes"] == 0
    assert [call.args[0] for call in c.run.call_args_list] == [
        script_command(script("probe"), ["/opt/kws", bid, "1", "1", COMPLETE_MARKER, SUMS_NAME])]


def test_deploy_refuses_an_emulated_axmodel_after_the_probe_only(tmp_path):
    build = make_build(tmp_path / "b", n_inputs=2)
    bid = collect_bundle(build).bundle_id
    c = MockContext(run={PROBE_RE: probe_result(bid, emulator=False, present=False)})
    c.host, c.port = "board", 22
    with pytest.raises(DeviceError, match="--allow-emulated"):
        deploy(c, build, "/opt/kws")
    assert len(c.run.call_args_list) == 1


@pytest.mark.parametrize("bad", ["kws", "/opt/../etc", "/", "/opt/kws\nrm -rf /"])
def test_bad_remote_roots_are_refused_before_any_command(tmp_path, bad):
    build = make_build(tmp_path / "b", n_inputs=1)
    c = MockContext()
    with pytest.raises(DeviceError, match="--remote-root"):
        deploy(c, build, bad)


def _fake_ssh_server() -> tuple[int, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]

    def serve():
        with srv:
            srv.settimeout(20)
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"SSH-2.0-fake\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return port, t


def test_board_emulator_task_runs_the_container_on_loopback_only(tmp_path, capsys, monkeypatch):
    from device.emulator import launch

    port, server = _fake_ssh_server()  # stands in for the container's sshd, so the port is taken already
    monkeypatch.setattr(launch, "port_in_use", lambda p: False)
    c = MockContext(run={
        "docker info --format '{{.ServerVersion}}'": Result("20.10.24\n"),
        "docker image inspect kws-board-emulator:latest": Result("[{}]\n"),
        f"docker rm -f kws-board-emulator-{port}": Result(""),
        re.compile(r"docker run "): Result("0123abcd\n"),
    })
    board_tasks.emulator(c, port=port, state=str(tmp_path / "emu"))
    server.join(5)
    calls = [call.args[0] for call in c.run.call_args_list]
    run_cmd = calls[-1]
    assert calls[:3] == ["docker info --format '{{.ServerVersion}}'", "docker image inspect kws-board-emulator:latest",
                         f"docker rm -f kws-board-emulator-{port}"]
    assert run_cmd.startswith(f"docker run -d --rm --name kws-board-emulator-{port} -p 127.0.0.1:{port}:22 ")
    assert f"{tmp_path / 'emu' / 'authorized_keys'}:/root/.ssh/authorized_keys:ro" in run_cmd
    assert "/etc/ssh/ssh_host_ed25519_key:ro" in run_cmd and run_cmd.endswith(" kws-board-emulator:latest")
    assert "0.0.0.0" not in run_cmd
    known = (tmp_path / "emu" / "known_hosts").read_text()
    assert known.startswith(f"[127.0.0.1]:{port} ssh-ed25519 ")
    assert f"invoke deploy --host 127.0.0.1 --port {port}" in capsys.readouterr().out


def test_tasks_without_a_board_exit_2_with_the_fix(monkeypatch):
    monkeypatch.delenv("KWS_BOARD_PASSWORD", raising=False)
    with pytest.raises(Exit) as e:
        board_tasks.deploy(MockContext())
    assert e.value.code == 2 and "--host" in str(e.value.message)
    with pytest.raises(Exit) as e:
        board_tasks.eval_npu(MockContext(), host="a", hosts="b,c")
    assert e.value.code == 2


def test_board_options_come_from_invoke_yaml_and_the_password_only_from_env(monkeypatch):
    cfg = {"host": "10.1.2.3", "port": 2200, "user": "ubuntu", "key": "~/k", "known_hosts": "/kh"}
    monkeypatch.setenv("KWS_BOARD_PASSWORD", "s3cret")
    (spec,) = board_specs(defaults=cfg)
    assert (spec.host, spec.port, spec.user, spec.key_filename, spec.known_hosts) == ("10.1.2.3", 2200, "ubuntu", "~/k", "/kh")
    assert spec.password == "s3cret" and "s3cret" not in repr(spec)
    specs = board_specs(hosts="a,b:2201,[::1]:22", key="k")
    assert [(s.host, s.port, s.user) for s in specs] == [("a", 22, "root"), ("b", 2201, "root"), ("::1", 22, "root")]
    assert parse_hosts("x:23", 22) == [("x", 23)]
    c = MockContext(config=Config(overrides={"board": {"remote_root": "/data/kws"}}))
    assert board_tasks._root(c, None) == "/data/kws" and board_tasks._root(c, "/x") == "/x"


def test_root_namespace_exposes_the_board_tasks():
    import tasks as root_tasks

    names = set(root_tasks.ns.task_names)
    assert {"deploy", "eval-npu", "bench", "board.emulator"} <= names

