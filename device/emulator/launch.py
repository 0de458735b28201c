"""Start a board EMULATOR reachable over SSH on 127.0.0.1: a Docker container, or a local sshd.

Local mode (no Docker daemon or no image): a private ``/usr/sbin/sshd`` on 127.0.0.1:PORT with its own
host key, throw-away client keys and ``authorized_keys``; each client key gets its own environment
through ``authorized_keys`` ``environment="…"`` options (``PermitUserEnvironment yes``), which is how the
session's PATH finds the emulator's ``ax_run_model`` in a private bin directory instead of /opt/bin.
Docker mode: ``docker run -p 127.0.0.1:PORT:22`` of the board-emulator image with the same host key and
authorized_keys mounted read-only. Either way a known_hosts file for the endpoint is written, so no
``--accept-new-host-key`` is needed.

Used by ``invoke board.emulator`` and by tests/device (local mode).

Example::

    python -m device.emulator.launch --state build/board-emulator --port 2222
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from invoke import Context

from pipeline.core.cli import StageError, run_main, setup_logging

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
EMULATOR_SCRIPT = HERE / "ax_run_model.py"
SSHD = "/usr/sbin/sshd"
DEFAULT_IMAGE = "kws-board-emulator:latest"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


@dataclasses.dataclass
class LoopbackBoard:
    """A running emulator endpoint: connect to 127.0.0.1:port as root with ``client_key(name)``."""

    state_dir: Path
    port: int
    pid: int | None
    known_hosts: Path
    keys: dict[str, Path]
    container: str | None = None
    proc: subprocess.Popen | None = dataclasses.field(default=None, repr=False)  # set when this process started sshd

    def client_key(self, name: str = "board") -> Path:
        return self.keys[name]

    def stop(self) -> None:
        if self.container:
            subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, check=False)
        elif self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)  # reap it: no zombie left in a long-lived test process
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elif self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            _reap(self.pid)
        (self.state_dir / "endpoint.json").unlink(missing_ok=True)

    def session_pids(self) -> list[int]:
        """PIDs of the per-connection sshd processes (children of the listener), for dropping sessions."""
        if self.pid is None:
            return []
        out = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(p) for p in (task / "children").read_text().split()]
        return out

    def describe(self) -> str:
        how = f"docker container {self.container}" if self.container else f"local sshd pid {self.pid}"
        return (
            f"board EMULATOR ({how}) listening on 127.0.0.1:{self.port}\n"
            f"  ssh -p {self.port} -i {shlex.quote(str(self.client_key()))} -o UserKnownHostsFile="
            f"{shlex.quote(str(self.known_hosts))} root@127.0.0.1 ax_run_model --help\n"
            f"  invoke deploy --host 127.0.0.1 --port {self.port} --key {shlex.quote(str(self.client_key()))} "
            f"--known-hosts {shlex.quote(str(self.known_hosts))}"
            + ("" if self.container else f" --remote-root {shlex.quote(str(self.state_dir / 'remote'))}")
        )


def _reap(pid: int, timeout_s: float = 5.0) -> None:
    """Wait for ``pid`` to go away; reap it if it is our child (else it belongs to init once we exit)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


def install_emulator_bin(bin_dir: Path, python: str = sys.executable) -> Path:
    """A private bin dir with the board's tools as EMULATORS, each run with ``python``: ``ax_run_model``,
    ``arecord``, ``systemctl``, ``journalctl``, and ``python3`` itself (numpy, onnxruntime; the emulator's
    ``axengine`` comes from PYTHONPATH, see :func:`board_environment`)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    tools = {
        "ax_run_model": f"{q(python)} {q(str(EMULATOR_SCRIPT))}",
        "arecord": f"{q(python)} {q(str(HERE / 'arecord.py'))}",
        "systemctl": f"{q(python)} {q(str(HERE / 'systemctl.py'))}",
        "journalctl": f"{q(python)} {q(str(HERE / 'systemctl.py'))} --journalctl",
        "python3": q(python),
    }
    for name, cmd in tools.items():
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\nexec {cmd} \"$@\"\n")
        tool.chmod(0o755)
    return bin_dir / "ax_run_model"


def board_environment(state_dir: Path, bin_dir: Path) -> dict[str, str]:
    """The SSH session environment of the local emulator: its tools first on PATH, its own HOME, microphone
    WAV, systemd state and unit folder (nothing of this machine's /etc or /var is touched)."""
    return {
        "PATH": f"{bin_dir}:{BASE_PATH}", "HOME": str(state_dir / "home"), "PYTHONPATH": str(HERE),
        "AX_EMULATOR_MIC": str(state_dir / "mic.wav"), "AX_EMULATOR_SYSTEMD": str(state_dir / "systemd"),
        "KWS_UNIT_DIR": str(state_dir / "systemd" / "system"),
    }


def _env_option(env: Mapping[str, str]) -> str:
    for k, v in env.items():
        if '"' in v or "\n" in v:
            raise StageError(f"environment value for {k} contains a quote or newline: {v!r}")
    return ",".join(f'environment="{k}={v}"' for k, v in env.items())


def _wait_port(port: int, proc: subprocess.Popen | None, timeout_s: float, log_file: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StageError(f"sshd exited with status {proc.returncode}: {log_file.read_text(errors='replace')[-800:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            if s.recv(4).startswith(b"SSH-"):
                return
        time.sleep(0.1)
    raise StageError(f"nothing answered SSH on 127.0.0.1:{port} within {timeout_s:.0f} s (log: {log_file})")


def prepare_state(state_dir: Path, clients: Mapping[str, Mapping[str, str]]) -> tuple[Path, dict[str, Path], Path]:
    """Host key, one client key per name, authorized_keys lines with each client's environment."""
    state_dir.mkdir(parents=True, exist_ok=True)
    host_key = state_dir / "ssh_host_ed25519_key"
    _keygen(host_key, "kws-board-emulator-host")
    keys: dict[str, Path] = {}
    lines = []
    for name, env in clients.items():
        key = state_dir / f"id_{name}"
        _keygen(key, f"kws-emulator-{name}")
        keys[name] = key
        opt = _env_option(env)
        lines.append(f"{opt + ' ' if opt else ''}{key.with_suffix('.pub').read_text().strip()}\n")
    auth = state_dir / "authorized_keys"
    auth.write_text("".join(lines))
    auth.chmod(0o600)
    return host_key, keys, auth


def _write_known_hosts(state_dir: Path, host_key: Path, port: int) -> Path:
    kind, b64 = host_key.with_suffix(".pub").read_text().split()[:2]
    known = state_dir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {kind} {b64}\n")
    return known


def start_local_sshd(
    state_dir: Path, port: int, clients: Mapping[str, Mapping[str, str]], timeout_s: float = 20.0,
) -> LoopbackBoard:
    """A private sshd on 127.0.0.1:port (foreground process in its own session; stop() ends it)."""
    if not Path(SSHD).exists():
        raise StageError(f"{SSHD} not found; apt-get install openssh-server")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir sshd insists on
    host_key, keys, auth = prepare_state(state_dir, clients)
    config = state_dir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {state_dir / 'sshd.pid'}",
        f"AuthorizedKeysFile {auth}", "StrictModes no", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitUserEnvironment yes", "UsePAM no", "Subsystem sftp internal-sftp", "MaxStartups 64",
        "MaxSessions 64", "LogLevel VERBOSE", "",
    ]))
    log_file = state_dir / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=log_file.open("ab"), start_new_session=True)
    try:
        _wait_port(port, proc, timeout_s, log_file)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    board = LoopbackBoard(state_dir, port, proc.pid, _write_known_hosts(state_dir, host_key, port), keys, proc=proc)
    (state_dir / "endpoint.json").write_text(json.dumps({"port": port, "pid": proc.pid, "container": None}) + "\n")
    return board


def docker_ready(c: Context, image: str) -> bool:
    """True if a Docker daemon answers and ``image`` exists (both asked through ``c.run``)."""
    if not c.run("docker info --format '{{.ServerVersion}}'", warn=True, hide=True).ok:
        return False
    return c.run(f"docker image inspect {shlex.quote(image)}", warn=True, hide=True).ok


def start_container(c: Context, state_dir: Path, port: int, image: str, timeout_s: float = 30.0) -> LoopbackBoard:
    """``docker run`` the board-emulator image with sshd published on 127.0.0.1:port only."""
    host_key, keys, auth = prepare_state(state_dir, {"board": {}})
    name = f"kws-board-emulator-{port}"
    c.run(f"docker rm -f {name}", warn=True, hide=True)
    q = shlex.quote
    r = c.run(f"docker run -d --rm --name {name} -p 127.0.0.1:{port}:22 "
              f"-v {q(str(host_key))}:/etc/ssh/ssh_host_ed25519_key:ro "
              f"-v {q(str(auth))}:/root/.ssh/authorized_keys:ro {q(image)}", warn=True, hide=True)
    if not r.ok:
        raise StageError(f"docker run {image} failed: {r.stderr.strip()}")
    _wait_port(port, None, timeout_s, Path(f"docker logs {name}"))
    board = LoopbackBoard(state_dir, port, None, _write_known_hosts(state_dir, host_key, port), keys, container=name)
    (state_dir / "endpoint.json").write_text(json.dumps({"port": port, "pid": None, "container": name}) + "\n")
    return board


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        # as sshd binds: connections of a stopped emulator in TIME_WAIT do not make the port busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def running_emulator(state_dir: Path, port: int) -> LoopbackBoard | None:
    """The emulator ``state_dir`` records on ``port``, if it still answers there."""
    info_path = state_dir / "endpoint.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None
    if info.get("port") != port:
        return None
    alive = Path(f"/proc/{info['pid']}").exists() if info.get("pid") else bool(info.get("container"))
    if not alive:
        return None
    keys = {p.name[3:]: p for p in state_dir.glob("id_*") if not p.name.endswith(".pub")}
    return LoopbackBoard(state_dir, port, info.get("pid"), state_dir / "known_hosts", keys, info.get("container"))


def start_emulator(c: Context, state_dir: Path, port: int, image: str = DEFAULT_IMAGE, runner: str = "auto") -> LoopbackBoard:
    """Docker if the daemon is up and the image exists (or runner='docker'), else a local sshd. A port that is
    taken refuses, unless it is this state folder's own emulator, which is adopted."""
    state_dir = state_dir.resolve()
    if port_in_use(port):
        board = running_emulator(state_dir, port)
        if board is not None:
            log.info("the board emulator of %s already listens on 127.0.0.1:%d; using it", state_dir, port)
            return board
        raise StageError(f"127.0.0.1:{port} is already in use by another program; pick a free --port "
                         "(or stop what listens there)")
    if runner == "docker" or (runner == "auto" and docker_ready(c, image)):
        return start_container(c, state_dir, port, image)
    bin_dir = state_dir / "bin"
    install_emulator_bin(bin_dir)
    (state_dir / "remote").mkdir(parents=True, exist_ok=True)
    (state_dir / "home").mkdir(parents=True, exist_ok=True)  # the 'board' user's HOME, not this machine's
    (state_dir / "systemd" / "system").mkdir(parents=True, exist_ok=True)
    return start_local_sshd(state_dir, port, {"board": board_environment(state_dir, bin_dir)})


def stop_emulator(state_dir: Path) -> str:
    info_path = state_dir / "endpoint.json"
    if not info_path.is_file():
        return f"no emulator recorded in {info_path}"
    info = json.loads(info_path.read_text())
    board = LoopbackBoard(state_dir, info["port"], info["pid"], state_dir / "known_hosts", {}, info["container"])
    board.stop()
    for _ in range(200):  # docker's port proxy can take seconds to let go on a loaded machine
        if not port_in_use(info["port"]):
            return f"stopped the board emulator on 127.0.0.1:{info['port']}"
        time.sleep(0.1)
    raise StageError(f"stopped the emulator recorded in {info_path}, but 127.0.0.1:{info['port']} still answers "
                     "(another program listens there)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Start (or --stop) a board EMULATOR on 127.0.0.1")
    p.add_argument("--state", type=Path, default=Path("build/board-emulator"), help="keys, config, remote root")
    p.add_argument("--port", type=int, default=2222)
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--runner", choices=["auto", "docker", "local"], default="auto")
    p.add_argument("--stop", action="store_true")
    args = p.parse_args(argv)
    setup_logging()
    if args.stop:
        print(stop_emulator(args.state))
        return 0
    print(start_emulator(Context(), args.state, args.port, args.image, args.runner).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
