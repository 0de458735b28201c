"""Invoke tasks for the board: deploy, eval-npu, bench, board.emulator (thin wrappers over device.*).

Board options default from ``invoke.yaml`` (gitignored, next to tasks.py), e.g.::

    board:
      host: 192.168.1.50
      key: ~/.ssh/id_ed25519
      remote_root: /opt/kws

The password, if the board needs one, comes from $KWS_BOARD_PASSWORD or --password-prompt; never a flag.

    invoke board.emulator --port 2222          # prints the options to reach it
    invoke deploy --host 127.0.0.1 --port 2222 --key build/board-emulator/id_board \
        --known-hosts build/board-emulator/known_hosts --remote-root build/board-emulator/remote
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from pipeline.core.cli import StageError

CONN_HELP = {
    "host": "board address (or board.host in invoke.yaml)",
    "hosts": "several boards, comma-separated host[:port]; run in parallel, one report each + a summary",
    "port": "SSH port (22)",
    "user": "SSH user (root, the M5Stack default)",
    "key": "SSH private key file",
    "known-hosts": "known_hosts file the board's host key is checked against (~/.ssh/known_hosts)",
    "accept-new-host-key": "trust an unknown host key and append it to --known-hosts (never a changed key)",
    "password-prompt": "ask for the SSH password (or set $KWS_BOARD_PASSWORD)",
    "remote-root": "work directory on the board; nothing outside it is touched (/opt/kws)",
    "build": "build folder with the artifacts (build)",
}


def _specs(c: Context, host, hosts, port, user, key, known_hosts, accept_new_host_key, password_prompt):
    from device.commands import board_specs

    return board_specs(host, hosts, port, user, key, known_hosts, accept_new_host_key, password_prompt,
                       defaults=c.config.get("board", {}))


def _root(c: Context, remote_root: str | None) -> str | None:
    return remote_root or c.config.get("board", {}).get("remote_root")


def _finish(results: dict, text: str) -> None:
    print(text)
    bad = sorted(k for k, v in results.items() if "error" in v)
    if bad:
        raise Exit(f"error: failed on {', '.join(bad)}", code=2)


def _guard(fn):
    try:
        return fn()
    except StageError as e:
        raise Exit(f"error: {e}", code=2) from None


@task(help={**CONN_HELP, "allow-emulated": "deploy an EMULATED axmodel to a board that is not the emulator"})
def deploy(c, host=None, hosts=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
           password_prompt=False, remote_root=None, build="build", allow_emulated=False):
    """Copy compiled.axmodel + the board inputs to <remote-root>/<bundle-id> (one archive, sha256-checked)."""
    from device import commands

    def go():
        specs = _specs(c, host, hosts, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        results = commands.deploy_boards(specs, build, _root(c, remote_root), allow_emulated)
        _finish(results, commands.format_deploy(results))

    _guard(go)


@task(help={**CONN_HELP, "mode": "per-input (one ax_run_model per input) or batch (one call, LF list)",
            "limit": "first N inputs of list.txt", "fresh": "forget this run's outputs (local and board) first",
            "deploy-first": "deploy before evaluating", "allow-emulated": "run an EMULATED axmodel on a non-emulator"})
def eval_npu(c, host=None, hosts=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
             password_prompt=False, remote_root=None, build="build", mode="per-input", limit=0, fresh=False,
             deploy_first=False, allow_emulated=False):
    """Run every input on the board NPU, pull the logits, compare with ONNX Runtime; resumable."""
    from device import commands

    def go():
        specs = _specs(c, host, hosts, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        results = commands.eval_boards(specs, build, _root(c, remote_root), mode=mode, limit=int(limit) or None,
                                       fresh=fresh, allow_emulated=allow_emulated, deploy_first=deploy_first)
        _finish(results, commands.format_eval(results))

    _guard(go)


@task(help={**CONN_HELP, "warmup": "warm-up runs (-w)", "repeat": "timed runs (-r)"})
def bench(c, host=None, hosts=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
          password_prompt=False, remote_root=None, build="build", warmup=10, repeat=100):
    """ax_run_model -m <model> -w W -r R on the board; printout parsed to build/device/<host>/<bundle>/bench.json."""
    from device import commands

    def go():
        specs = _specs(c, host, hosts, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        results = commands.bench_boards(specs, build, _root(c, remote_root), int(warmup), int(repeat))
        _finish(results, commands.format_bench(results))

    _guard(go)


@task(help={"port": "loopback port for its sshd (2222)", "state": "keys/config folder (build/board-emulator)",
            "image": "board-emulator Docker image", "runner": "auto (docker if up and image exists), docker, local",
            "stop": "stop the emulator recorded in --state"})
def emulator(c, port=2222, state="build/board-emulator", image="kws-board-emulator:latest", runner="auto", stop=False):
    """Start a board EMULATOR on 127.0.0.1:PORT (container, else a local sshd) and print how to connect."""
    from device.emulator import launch

    def go():
        if stop:
            print(launch.stop_emulator(Path(state)))
            return
        print(launch.start_emulator(c, Path(state), int(port), image, runner).describe())

    _guard(go)


board = Collection("board")
board.add_task(emulator)
