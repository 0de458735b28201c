"""Start a Docker daemon in the background if none answers, and wait until it does (idempotent).

"Answers" means the Engine API on the Unix socket replies ``OK`` to ``GET /_ping``; a stale socket file
left by a dead daemon does not count. The daemon's output goes to a log file; its pid is printed.

    python3 docker/daemon.py                    # used by `invoke docker.start` and .ci/run
    python3 docker/daemon.py --check            # exit 0 if a daemon answers, 1 if not; starts nothing
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.cli import die, run_main, setup_logging

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/var/run/docker.sock")
DEFAULT_LOG = Path("/var/log/kws-dockerd.log")


def daemon_answers(socket_path: Path, timeout_s: float = 2.0) -> bool:
    """True if a Docker Engine API on ``socket_path`` answers ``GET /_ping`` with 200 OK."""
    if not socket_path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(socket_path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
                if len(reply) > 65536:
                    break
    except OSError:
        return False
    status_line = reply.split(b"\r\n", 1)[0]
    return status_line.startswith(b"HTTP/1.") and b" 200" in status_line and reply.rstrip().endswith(b"OK")


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.25,
             alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll ``predicate`` until it holds (True), the deadline passes or ``alive()`` turns False (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if not alive() or time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def start_daemon(dockerd: str, socket_path: Path, log_path: Path, timeout_s: float) -> int:
    """Spawn ``dockerd`` detached from this process and wait for its API; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([dockerd, "--host", f"unix://{socket_path}"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    if not wait_for(lambda: daemon_answers(socket_path), timeout_s, alive=lambda: proc.poll() is None):
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        status = proc.poll()
        if status is None:
            proc.terminate()
            what = f"no answer on {socket_path} within {timeout_s:.0f} s (stopped it)"
        else:
            what = f"exited with status {status} before answering on {socket_path}"
        die(f"{dockerd}: {what}; last lines of {log_path}:\n" + "\n".join(tail))
    return proc.pid


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="Engine API socket")
    p.add_argument("--log", type=Path, default=DEFAULT_LOG, help="dockerd output")
    p.add_argument("--timeout-s", type=float, default=60.0, help="how long to wait for the API")
    p.add_argument("--dockerd", default="dockerd", help="daemon executable")
    p.add_argument("--check", action="store_true", help="only report whether a daemon answers")
    args = p.parse_args(argv)
    setup_logging()
    if daemon_answers(args.socket):
        print(f"docker daemon: answering on {args.socket}")
        return 0
    if args.check:
        print(f"docker daemon: no answer on {args.socket}")
        return 1
    dockerd = shutil.which(args.dockerd)
    if dockerd is None:
        die(f"{args.dockerd}: not found; apt-get install -y docker.io (or bash install.sh --docker)")
    if os.geteuid() != 0:
        die(f"{dockerd}: starting a daemon needs root; run `sudo python3 docker/daemon.py` or start the docker service")
    pid = start_daemon(dockerd, args.socket, args.log, args.timeout_s)
    print(f"docker daemon: started {dockerd} (pid {pid}, log {args.log}), answering on {args.socket}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
