"""``invoke service``: the board runtime as a systemd service (at boot, restarted on failure, logged to the journal).

The unit runs ``<remote_root>/current/runtime/listen.py`` on the microphone, so a later ``invoke deploy``
switches the service to the new bundle at its next start (``invoke service --enable`` again restarts it
now). On the board EMULATOR the same unit file is run by the emulator's systemd stand-in
(device/emulator/systemctl.py).
"""

from __future__ import annotations

from typing import Any

from fabric import Connection

from device.remote import script
from device.ssh import DeviceError, run_script, tail

UNIT_NAME = "kws"


def systemd_quote(arg: str) -> str:
    """One ExecStart argument, double-quoted the way systemd reads it (specifiers and variables escaped)."""
    if any(ch in arg for ch in "\n\r\0"):
        raise DeviceError(f"{arg!r}: a service argument cannot hold a line break")
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def unit_text(python: str, remote_root: str, options: list[str]) -> str:
    argv = [python, f"{remote_root}/current/runtime/listen.py", "--bundle", f"{remote_root}/current", *options]
    return "\n".join([
        "[Unit]",
        f"Description=KWS keyword spotter (board runtime of {remote_root}/current)",
        "After=sound.target",
        "",
        "[Service]",
        "ExecStart=" + " ".join(systemd_quote(a) for a in argv),
        "Restart=always",
        "RestartSec=1",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ])


def _probe(conn: Connection, root: str, name: str) -> dict[str, str]:
    r = run_script(conn, script("service"), ["probe", root, name], "service probe")
    if r.exited != 0:
        raise DeviceError(f"{conn.host}: {tail(r.stderr) or 'service probe failed'}")
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def service(conn: Connection, remote_root: str, action: str, options: list[str] | None = None,
            name: str = UNIT_NAME) -> dict[str, Any]:
    """``enable`` (write the unit, enable, start), ``status`` or ``disable`` (stop, disable, remove the unit)."""
    if action == "enable":
        info = _probe(conn, remote_root, name)
        if info.get("runtime") != "present":
            raise DeviceError(f"{conn.host}: {remote_root}/current has no board runtime; run `make all`, then "
                              "`invoke deploy`, then enable the service")
        if not info.get("python3"):
            raise DeviceError(f"{conn.host}: python3 not found on the board: apt-get install python3 python3-numpy")
        unit = unit_text(info["python3"], remote_root, options or [])
        r = run_script(conn, script("service"), ["enable", remote_root, name, unit], "service enable")
    elif action in ("status", "disable"):
        r = run_script(conn, script("service"), [action, remote_root, name], f"service {action}")
    else:
        raise DeviceError(f"service action {action!r}: use enable, status or disable")
    if action != "status" and r.exited != 0:
        raise DeviceError(f"{conn.host}: service {action} failed: {tail(r.stderr + r.stdout)}")
    return {"host": conn.host, "action": action, "active": action == "status" and r.exited == 0,
            "exit": r.exited, "text": (r.stdout + r.stderr).strip()}
