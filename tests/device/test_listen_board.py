"""listen / service / record against a real sshd on 127.0.0.1 serving the board EMULATOR (its arecord plays
a WAV at real-time pace, its systemctl runs the unit file under a supervisor)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.deploy import deploy
from device.listen import listen, listen_options
from device.record import record
from device.service import service, systemd_quote, unit_text
from device.ssh import DeviceError
from tests.conftest import ROOT, write_wav
from tests.device.tiny_model import make_listen_build, write_tones
from tests.eval.conftest import SR

pytestmark = pytest.mark.ssh


@pytest.fixture
def listen_build(tmp_path: Path) -> Path:
    return make_listen_build(tmp_path / "build")


@pytest.fixture
def tones(tmp_path: Path) -> Path:
    return write_tones(tmp_path / "tones.wav")


def runtime_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -ww" not in line]


class Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def test_listen_wav_fast_prints_the_host_detector_events(conn, listen_build, remote_root, tones):
    deploy(conn, listen_build, str(remote_root))
    out, log = Sink(), Sink()
    result = listen(conn, str(remote_root), tones, listen_options(fast=True), out=out, log=log)
    assert [e["class"] for e in result["events"]] == ["ALFA", "BRAVO"]
    assert [json.loads(line)["class"] for line in out.text.splitlines()] == ["ALFA", "BRAVO"]
    assert "axengine EMULATOR" in log.text
    # the uploaded WAV is gone, nothing keeps running
    assert list((remote_root / ".incoming").iterdir()) == []
    assert runtime_processes(str(remote_root)) == []


def test_listen_on_the_microphone_for_n_seconds(conn, listen_build, remote_root, tones, loopback_board):
    deploy(conn, listen_build, str(remote_root))
    mic = loopback_board.state_dir / "mic.wav"
    mic.write_bytes(tones.read_bytes())
    try:
        t0 = time.monotonic()
        result = listen(conn, str(remote_root), None, listen_options(seconds=3.5), out=Sink(), log=Sink())
        took = time.monotonic() - t0
    finally:
        mic.unlink()
    assert [e["class"] for e in result["events"]] == ["ALFA", "BRAVO"]
    assert took >= 3.0  # the emulator's microphone runs at real-time pace
    assert all(0 <= e["latency_ms"] < 1000 for e in result["events"])


def test_a_bad_capture_device_is_a_clear_error_and_nothing_is_left_running(conn, listen_build, remote_root):
    deploy(conn, listen_build, str(remote_root))
    with pytest.raises(DeviceError, match="audio open error.*arecord -l"):
        listen(conn, str(remote_root), None, listen_options(device="hw:9,9"), out=Sink(), log=Sink())
    assert runtime_processes(str(remote_root)) == []


def test_listen_without_a_deployed_runtime_says_what_to_do(conn, build, remote_root, tones):
    deploy(conn, build, str(remote_root))  # the plain test build has no runtime/
    with pytest.raises(DeviceError, match=r"no board runtime; run `make all`, then `invoke deploy`"):
        listen(conn, str(remote_root), tones, listen_options(fast=True), out=Sink(), log=Sink())


def invoke_args(board, remote_root: Path) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(board.port), "--key", str(board.client_key()),
            "--known-hosts", str(board.known_hosts), "--remote-root", str(remote_root)]


@pytest.mark.parametrize("how", ["ctrl-c", "dropped"])
def test_ctrl_c_or_a_dropped_link_stops_the_runtime_on_the_board_too(conn, listen_build, remote_root, loopback_board,
                                                                     how):
    deploy(conn, listen_build, str(remote_root))
    # an ignored SIGINT is inherited through exec (a test run started as a background job has one): the invoke
    # process must start with SIGINT at its default, as it does from a terminal, for Ctrl-C to mean anything
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "listen", *invoke_args(loopback_board, remote_root)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        signal.signal(signal.SIGINT, saved)
    try:
        deadline = time.monotonic() + 60
        while not runtime_processes(f"{remote_root}/current/runtime/listen.py") and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        if not runtime_processes(f"{remote_root}/current/runtime/listen.py"):
            proc.kill()
            pytest.fail(f"the runtime never started: {proc.communicate()[0]}")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)  # SIGKILL: the link just drops
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if how == "ctrl-c":
        assert proc.returncode == 0, out
        assert "stopped by SIG" in out and "0 event(s) (stopped)" in out
    for _ in range(50):
        if not runtime_processes(str(remote_root)):
            break
        time.sleep(0.1)
    assert runtime_processes(str(remote_root)) == []  # neither the runtime nor its arecord


def test_systemd_quoting() -> None:
    assert systemd_quote('a "b" $HOME 50%') == '"a \\"b\\" $$HOME 50%%"'
    text = unit_text("/usr/bin/python3", "/opt/my kws", ["--exec", "notify-send"])
    assert 'ExecStart="/usr/bin/python3" "/opt/my kws/current/runtime/listen.py" "--bundle" "/opt/my kws/current"' in text
    assert "Restart=always" in text
    with pytest.raises(DeviceError):
        systemd_quote("a\nb")


def systemctl(conn, *args: str) -> str:
    return conn.run(" ".join(["systemctl", *args]), hide=True, warn=True, in_stream=False).stdout.strip()


def test_service_runs_restarts_after_kill_9_reports_and_disables(conn, listen_build, remote_root, loopback_board):
    deploy(conn, listen_build, str(remote_root))
    try:
        r = service(conn, str(remote_root), "enable")
        assert "enabled" in r["text"]
        assert systemctl(conn, "is-active", "kws.service") == "active"
        pid = int(systemctl(conn, "show", "-p", "MainPID", "--value", "kws.service"))
        assert f"{remote_root}/current/runtime/listen.py" in Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        new = pid
        while time.monotonic() < deadline and new in (pid, 0):
            time.sleep(0.2)
            new = int(systemctl(conn, "show", "-p", "MainPID", "--value", "kws.service") or 0)
        assert new not in (pid, 0), "not restarted after kill -9"
        assert systemctl(conn, "show", "-p", "NRestarts", "--value", "kws.service") == "1"
        st = service(conn, str(remote_root), "status")
        assert st["active"] and "Active: active (running)" in st["text"] and "status=9/SIGKILL" in st["text"]
    finally:
        off = service(conn, str(remote_root), "disable")
    assert "disabled and removed" in off["text"]
    assert systemctl(conn, "is-active", "kws.service") == "inactive"
    assert runtime_processes(f"{remote_root}/current/runtime/listen.py") == []
    st = service(conn, str(remote_root), "status")
    assert not st["active"]


def test_service_enable_without_a_runtime_is_refused(conn, build, remote_root):
    deploy(conn, build, str(remote_root))
    with pytest.raises(DeviceError, match="has no board runtime"):
        service(conn, str(remote_root), "enable")


def test_record_keeps_good_takes_and_refuses_silent_ones(conn, remote_root, loopback_board, tmp_path):
    mic = loopback_board.state_dir / "mic.wav"
    seeds = tmp_path / "my seeds"
    salir = ROOT / "data" / "demo-seeds" / "SALIR" / "000_salir.wav"
    log = Sink()
    try:
        mic.write_bytes(salir.read_bytes())
        good = record(conn, str(remote_root), seeds, "SALIR", takes=2, seconds=2, device="plughw:0,0", fmt="S32_LE",
                      clip_samples=16000, log=log)
        write_wav(mic, np.zeros(SR, np.float32))
        silent = record(conn, str(remote_root), seeds, "SALIR", takes=1, seconds=1, device="plughw:0,0", fmt="S32_LE",
                        clip_samples=16000, log=log)
    finally:
        mic.unlink(missing_ok=True)
    assert len(good["kept"]) == 2 and good["refused"] == []
    files = sorted((seeds / "SALIR").glob("*.wav"))
    assert len(files) == 2 and len({f.name for f in files}) == 2
    for f in files:
        info = sf.info(str(f))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16") and info.frames == 32000
    assert silent["kept"] == [] and "all silent" in silent["refused"][0]["reason"]
    assert len(list((seeds / "SALIR").glob("*.wav"))) == 2
    assert list((remote_root / ".incoming").iterdir()) == []

    # The next build takes them: the dataset stage draws SALIR clips from the recorded takes.
    import shutil

    from pipeline.core.cli import run_main
    from pipeline.stages import dataset

    for d in (ROOT / "data" / "demo-seeds").iterdir():
        if d.is_dir() and d.name != "SALIR":
            shutil.copytree(d, seeds / d.name)
    shutil.copy(ROOT / "data" / "demo-seeds" / "words.toml", seeds / "words.toml")
    out = tmp_path / "dataset"
    assert run_main(dataset.main, ["--seeds", str(seeds), "--out", str(out), "--per-class", "4", "--fondo-minutes",
                                   "0.1", "--workers", "1", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    sources = {Path(r["source"]).name for r in rows if r["class"] == "SALIR"}
    assert sources and sources <= {f.name for f in files}, sources


def test_record_refuses_a_bad_class_name(conn, remote_root, tmp_path):
    with pytest.raises(DeviceError, match="a class is a folder name"):
        record(conn, str(remote_root), tmp_path, "../etc", 1, 1, "plughw:0,0", "S32_LE", 16000, log=Sink())
