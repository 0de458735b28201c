"""Invoke tasks for the board: deploy, eval-npu, bench, listen, service, record, board.emulator (thin wrappers
over device.*).

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


@task(help={**CONN_HELP, "allow-emulated": "deploy an EMULATED axmodel to a board that is not the emulator",
            "force": "upload and install the bundle again even if an intact copy is on the board"})
def deploy(c, host=None, hosts=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
           password_prompt=False, remote_root=None, build="build", allow_emulated=False, force=False):
    """Copy compiled.axmodel, the board inputs and the runtime to <remote-root>/<bundle-id> (one archive,
    sha256-checked; a damaged copy on the board is replaced)."""
    from device import commands

    def go():
        specs = _specs(c, host, hosts, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        results = commands.deploy_boards(specs, build, _root(c, remote_root), allow_emulated, force)
        _finish(results, commands.format_deploy(results))

    _guard(go)


@task(help={k: v for k, v in CONN_HELP.items() if k != "build"})
def verify(c, host=None, hosts=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
           password_prompt=False, remote_root=None):
    """Re-hash the active bundle on the board against its SHA256SUMS; report damaged files (exit 1)."""
    from device import commands

    def go():
        specs = _specs(c, host, hosts, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        results = commands.verify_boards(specs, _root(c, remote_root))
        _finish(results, commands.format_verify(results))
        if any(r.get("damaged") for r in results.values()):
            raise Exit("error: damaged bundle on the board; run invoke deploy to replace it", code=1)

    _guard(go)


@task(help={**CONN_HELP, "mode": "per-input (one ax_run_model per input) or batch (one call, LF list)",
            "limit": "first N inputs of list.txt", "fresh": "forget this run's outputs (local and board) first",
            "deploy-first": "deploy before evaluating", "allow-emulated": "run an EMULATED axmodel on a non-emulator",
            "allow-failures": "inputs per board that may fail (no output) before the run counts as failed (0)"})
def eval_npu(c, host=None, hosts=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
             password_prompt=False, remote_root=None, build="build", mode="per-input", limit=0, fresh=False,
             deploy_first=False, allow_emulated=False, allow_failures=0):
    """Run every input on the board NPU, pull the logits, compare with ONNX Runtime; resumable."""
    from device import commands

    def go():
        specs = _specs(c, host, hosts, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        results = commands.eval_boards(specs, build, _root(c, remote_root), mode=mode, limit=int(limit) or None,
                                       fresh=fresh, allow_emulated=allow_emulated, deploy_first=deploy_first)
        _finish(results, commands.format_eval(results))
        too_many = commands.failed_inputs(results, int(allow_failures))
        if too_many:
            raise Exit(f"error: failed inputs: {too_many} (allowed {int(allow_failures)} per board; see the report, "
                       "or pass --allow-failures N)", code=2)

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


def _one_board(c: Context, host, port, user, key, known_hosts, accept_new_host_key, password_prompt):
    from device.ssh import connect, open_connection

    specs = _specs(c, host, None, port, user, key, known_hosts, accept_new_host_key, password_prompt)
    return open_connection(connect(specs[0]))


def _remote_root(c: Context, remote_root: str | None) -> str:
    from device.commands import DEFAULT_REMOTE_ROOT
    from device.ssh import check_remote_root

    return check_remote_root(_root(c, remote_root) or DEFAULT_REMOTE_ROOT)


ONE_BOARD = {k: v for k, v in CONN_HELP.items() if k not in ("hosts", "build")}
AUDIO_HELP = {"device": "ALSA capture device on the board (plughw:0,0, the LLM Kit's microphone)",
              "format": "arecord sample format (S32_LE: the LLM Kit's driver garbles S16_LE capture)"}


@task(help={**ONE_BOARD, **AUDIO_HELP, "wav": "a local WAV (16 kHz mono PCM) played to the runtime instead of the microphone",
            "fast": "with --wav: as fast as it computes, not at real-time pace", "seconds": "stop after N seconds of audio",
            "exec": "command the board runs per event, the class appended as its last argument",
            "events-out": "also write the events here (JSON lines)", "stats": "print the runtime's per-hop timings"})
def listen(c, host=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
           password_prompt=False, remote_root=None, wav=None, fast=False, seconds=0.0, device=None, format=None,
           exec=None, events_out=None, stats=False):
    """Run the deployed board runtime (microphone or --wav), stream its events here; Ctrl-C stops it there too."""
    from device import listen as listen_mod
    from pipeline.core.io import atomic_write_text

    def go():
        if fast and not wav:
            raise Exit("error: --fast needs --wav (the microphone runs at its own pace)", code=2)
        conn = _one_board(c, host, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        try:
            opts = listen_mod.listen_options(fast, float(seconds), device, format, exec, stats)
            result = listen_mod.listen(conn, _remote_root(c, remote_root), wav, opts)
        finally:
            conn.close()
        if events_out:
            import json

            atomic_write_text(events_out, "".join(json.dumps(e) + "\n" for e in result["events"]))
        if result["stats"]:
            import json

            print(json.dumps({"stats": result["stats"]}))
        print(f"{len(result['events'])} event(s){' (stopped)' if result['stopped'] else ''}", file=__import__("sys").stderr)

    _guard(go)


@task(help={**ONE_BOARD, **AUDIO_HELP, "enable": "install the systemd unit, start it now and at every boot",
            "disable": "stop it and remove the unit", "status": "systemctl status + the last journal lines",
            "exec": "command the board runs per event, the class appended as its last argument"})
def service(c, host=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
            password_prompt=False, remote_root=None, enable=False, disable=False, status=False, device=None,
            format=None, exec=None):
    """The board runtime as a systemd service on <remote-root>/current (restarted on failure, journal logs)."""
    from device import listen as listen_mod
    from device import service as service_mod

    def go():
        chosen = [a for a, on in (("enable", enable), ("disable", disable), ("status", status)) if on]
        if len(chosen) != 1:
            raise Exit("error: give exactly one of --enable, --disable, --status", code=2)
        conn = _one_board(c, host, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        try:
            opts = listen_mod.listen_options(device=device, fmt=format, exec_cmd=exec)
            result = service_mod.service(conn, _remote_root(c, remote_root), chosen[0], opts)
        finally:
            conn.close()
        print(result["text"])
        if chosen[0] == "status" and not result["active"]:
            raise Exit(f"{service_mod.UNIT_NAME}.service is not active", code=3)

    _guard(go)


@task(help={**ONE_BOARD, **AUDIO_HELP, "class": "the command (seed folder name), e.g. SALIR; FONDO for background",
            "takes": "number of takes", "seconds": "length of each take (whole seconds)",
            "seeds": "the seeds folder the takes go into (then: make all SEEDS=<it>)"})
def record(c, host=None, port=None, user=None, key=None, known_hosts=None, accept_new_host_key=False,
           password_prompt=False, remote_root=None, seeds=None, takes=5, seconds=2, device=None,
           format=None, class_=None):
    """Record takes on the board's microphone into <seeds>/<CLASS>/; silent, clipped or wordless takes are refused."""
    from device import record as record_mod
    from device.runtime.listen import DEFAULT_DEVICE
    from pipeline.audio.features import load_contract

    cls = class_

    def go():
        if not cls or not seeds:
            raise Exit("error: give --class and --seeds, e.g. --class SALIR --seeds my-seeds", code=2)
        conn = _one_board(c, host, port, user, key, known_hosts, accept_new_host_key, password_prompt)
        try:
            result = record_mod.record(conn, _remote_root(c, remote_root), Path(seeds), cls, int(takes), int(seconds),
                                       device or DEFAULT_DEVICE, format or "S32_LE", load_contract().clip_samples)
        finally:
            conn.close()
        print(f"{cls}: kept {len(result['kept'])} of {int(takes)} take(s) in {Path(seeds) / cls}")
        if result["refused"]:  # each refusal and its reason were printed as it happened
            which = ", ".join(r["take"] for r in result["refused"])
            raise Exit(f"error: {len(result['refused'])} take(s) refused ({which}); record them again", code=2)

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
