"""``invoke listen``: the board runtime over SSH, its events streamed back live, stopped cleanly.

The runtime (``device/runtime/listen.py`` in the deployed bundle) runs in a pseudo-terminal on the board:
Ctrl-C here is forwarded to it as an interrupt and a dropped connection hangs it up, so it stops its
capture and exits either way; nothing is left running. Its event lines (JSON) are printed on stdout as
they come and kept (``--events-out``); its log lines go to stderr.

    invoke listen --host 192.168.1.50 --key ~/.ssh/id_ed25519                    # the microphone
    invoke listen --host 127.0.0.1 --port 2222 ... --wav take.wav --fast        # a WAV, as fast as it runs
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any, TextIO

import paramiko
from fabric import Connection

from device.remote import script
from device.ssh import ConnectionLost, DeviceError, script_command, tail


class _Lines:
    """A stream for invoke's ``out_stream``: JSON lines are events (printed to ``out``, kept), the rest logs."""

    def __init__(self, out: TextIO, log: TextIO) -> None:
        self.out, self.log = out, log
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and "class" in event:
                self.events.append(event)
                self.out.write(line + "\n")
                self.out.flush()
                return
        if line.strip():
            self.other.append(line)
            self.log.write(line + "\n")
            self.log.flush()

    def flush(self) -> None:
        if self._buf:
            self._line(self._buf)
            self._buf = ""


def listen_options(fast: bool = False, seconds: float = 0.0, device: str | None = None, fmt: str | None = None,
                   exec_cmd: str | None = None, stats: bool = False) -> list[str]:
    opts = []
    if fast:
        opts.append("--fast")
    if seconds:
        opts += ["--seconds", f"{float(seconds):g}"]
    if device:
        opts += ["--device", device]
    if fmt:
        opts += ["--format", fmt]
    if exec_cmd:
        opts += ["--exec", exec_cmd]
    if stats:
        opts.append("--stats")
    return opts


def listen(conn: Connection, remote_root: str, wav: str | Path | None = None, options: list[str] | None = None,
           out: TextIO = sys.stdout, log: TextIO = sys.stderr) -> dict[str, Any]:
    """Run the runtime until it ends (end of the WAV, --seconds) or is interrupted; returns its events."""
    remote_wav = ""
    if wav is not None:
        wav = Path(wav)
        if not wav.is_file():
            raise DeviceError(f"{wav}: no such WAV file")
        remote_wav = f"{remote_root}/.incoming/listen-{secrets.token_hex(4)}.wav"
        try:
            conn.run(script_command('mkdir -p "$1"', [f"{remote_root}/.incoming"]), hide=True, in_stream=False)
            conn.put(str(wav), remote_wav)
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise ConnectionLost(f"{conn.host}: upload of {wav} failed ({type(e).__name__}: {e})") from None
    lines = _Lines(out, log)
    cmd = script_command(script("listen"), [remote_root, remote_wav, *(options or [])])
    try:
        # pty: Ctrl-C here reaches the runtime as SIGINT, a dropped link as SIGHUP (no orphan on the board)
        result = conn.run(cmd, pty=True, warn=True, hide=False, out_stream=lines, in_stream=False)
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise ConnectionLost(f"{conn.host}: connection lost while listening ({type(e).__name__}: {e}); "
                             "the runtime on the board was hung up with it") from None
    finally:
        lines.flush()
    if result.exited not in (0, 130):
        raise DeviceError(f"{conn.host}: the board runtime failed (exit {result.exited}): "
                          f"{tail(chr(10).join(lines.other), 6) or 'no message'}")
    stats = None
    for line in lines.other:
        if line.startswith('{"stats"'):
            stats = json.loads(line)["stats"]
    return {"host": conn.host, "events": lines.events, "stopped": result.exited == 130, "stats": stats}
