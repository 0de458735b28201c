"""docker/daemon.py: 'a daemon answers' means /_ping says OK; start waits for it; idempotent; clear errors."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import threading
from pathlib import Path

import pytest

from pipeline.core.cli import StageError
from tests.docker.conftest import load_script

dm = load_script("daemon")

# A stand-in dockerd: serves the Engine API's /_ping on the socket named by --host unix://PATH.
FAKE_DOCKERD = """#!{python}
import socket, sys, os
path = sys.argv[sys.argv.index("--host") + 1].removeprefix("unix://")
if os.environ.get("FAKE_DOCKERD_DIES"):
    print("failed to start daemon: fake failure", flush=True)
    sys.exit(1)
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(4)
while True:
    conn, _ = srv.accept()
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nApi-Version: 1.41\\r\\nContent-Length: 2\\r\\n\\r\\nOK")
    conn.close()
"""


def serve_once(path: Path, reply: bytes) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(reply)
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture
def sock_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # AF_UNIX paths are limited to ~107 bytes; keep them short.
    return tmp_path_factory.mktemp("s", numbered=True)


def test_no_socket_file_means_no_daemon(sock_dir: Path) -> None:
    assert not dm.daemon_answers(sock_dir / "docker.sock")


def test_ping_ok_means_a_daemon(sock_dir: Path) -> None:
    path = sock_dir / "ok.sock"
    t = serve_once(path, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    assert dm.daemon_answers(path)
    t.join(5)


def test_something_else_on_the_socket_is_not_a_daemon(sock_dir: Path) -> None:
    path = sock_dir / "bad.sock"
    t = serve_once(path, b"HTTP/1.1 500 Internal Server Error\r\n\r\nnope")
    assert not dm.daemon_answers(path)
    t.join(5)


def test_stale_socket_file_is_not_a_daemon(sock_dir: Path) -> None:
    path = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens
    assert path.exists() and not dm.daemon_answers(path)


def test_wait_for_stops_when_the_process_dies() -> None:
    calls = []
    assert not dm.wait_for(lambda: calls.append(1) or False, timeout_s=60, poll_s=0.01, alive=lambda: len(calls) < 3)
    assert len(calls) == 3


def _fake_dockerd(tmp_path: Path) -> Path:
    exe = tmp_path / "dockerd"
    exe.write_text(FAKE_DOCKERD.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_start_daemon_waits_for_the_api_and_is_idempotent(sock_dir: Path, tmp_path: Path, capsys) -> None:
    path = sock_dir / "d.sock"
    pid = dm.start_daemon(str(_fake_dockerd(tmp_path)), path, tmp_path / "dockerd.log", timeout_s=30)
    try:
        assert dm.daemon_answers(path)
        # Second call: answers already, so main starts nothing and says so.
        assert dm.main(["--socket", str(path), "--dockerd", "/nonexistent/dockerd"]) == 0
        assert "answering" in capsys.readouterr().out
    finally:
        os.kill(pid, signal.SIGTERM)


def test_a_daemon_that_dies_is_reported_with_its_log(sock_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_DOCKERD_DIES", "1")
    with pytest.raises(StageError, match=r"(?s)exited with status 1 before answering.*fake failure"):
        dm.start_daemon(str(_fake_dockerd(tmp_path)), sock_dir / "x.sock", tmp_path / "dockerd.log", timeout_s=30)


def test_check_mode_starts_nothing(sock_dir: Path) -> None:
    assert dm.main(["--check", "--socket", str(sock_dir / "none.sock"), "--dockerd", "/nonexistent"]) == 1


def test_missing_dockerd_says_what_to_install(sock_dir: Path) -> None:
    with pytest.raises(StageError, match="apt-get install -y docker.io"):
        dm.main(["--socket", str(sock_dir / "none.sock"), "--dockerd", "/nonexistent/dockerd"])
