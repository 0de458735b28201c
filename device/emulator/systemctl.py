#!/usr/bin/env python3
"""systemctl / journalctl BOARD EMULATOR: runs a systemd unit file under a small supervisor (no systemd here).

Enough of systemd for ``invoke service``: ``daemon-reload``, ``enable|disable [--now]``, ``start``, ``stop``,
``restart``, ``is-active``, ``is-enabled``, ``status [--lines=N]``, ``show -p PROP [--value]`` and, as ``systemctl.py
--journalctl`` (the emulator's journalctl), ``-u UNIT [-n N]``. From the unit's ``[Service]`` it honours ``ExecStart``, ``Restart`` (no, always,
on-failure), ``RestartSec``, ``WorkingDirectory`` and ``Environment``, and systemd's default start limit (5
starts in 10 s, then ``failed``). ``--boot`` starts every enabled unit (the emulator's entrypoint runs it,
as boot would). The supervisor logs the service's stdout and stderr, with its own start/exit lines, to a
journal file per unit. Stdlib only.

Paths: unit files in ``$KWS_UNIT_DIR`` (/etc/systemd/system), state and journals in ``$AX_EMULATOR_SYSTEMD``
(/var/lib/ax-emulator/systemd).
"""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

START_LIMIT_BURST, START_LIMIT_INTERVAL_S = 5, 10.0


def unit_dir() -> Path:
    return Path(os.environ.get("KWS_UNIT_DIR", "/etc/systemd/system"))


def state_dir() -> Path:
    d = Path(os.environ.get("AX_EMULATOR_SYSTEMD", "/var/lib/ax-emulator/systemd"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _name(unit: str) -> str:
    return unit if unit.endswith(".service") else f"{unit}.service"


def _file(unit: str, kind: str) -> Path:
    return state_dir() / f"{_name(unit)}.{kind}"


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _alive(pid_text: str) -> bool:
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _read(Path(f"/proc/{pid_text}/stat"))
    return not (stat and stat.split(")")[-1].split()[0] == "Z")


def _journal(unit: str, text: str) -> None:
    with _file(unit, "journal").open("a") as f:
        f.write(f"{time.strftime('%b %d %H:%M:%S')} systemd[{os.getpid()}]: {text}\n")


def _service(unit: str) -> dict:
    path = unit_dir() / _name(unit)
    if not path.is_file():
        raise SystemExit(f"Unit {_name(unit)} not found.")
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(path)
    svc = dict(cp["Service"]) if cp.has_section("Service") else {}
    if "ExecStart" not in svc:
        raise SystemExit(f"{path}: [Service] has no ExecStart")
    return {"path": path, "description": cp.get("Unit", "Description", fallback=""), **svc}


def active_state(unit: str) -> str:
    if _alive(_read(_file(unit, "supervisor.pid"))):
        return "active" if _alive(_read(_file(unit, "main.pid"))) else "activating"
    return _read(_file(unit, "result"), "inactive")


# ---- the supervisor -------------------------------------------------------------------------------


def supervise(unit: str) -> int:
    svc = _service(unit)
    argv = shlex.split(svc["ExecStart"].lstrip("-@+!"))
    restart = svc.get("Restart", "no")
    restart_s = float(svc.get("RestartSec", "0.1").rstrip("s") or 0.1)
    env = dict(os.environ)
    for item in shlex.split(svc.get("Environment", "")):
        k, _, v = item.partition("=")
        env[k] = v
    stopping = False
    child: subprocess.Popen | None = None

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_term)
    _file(unit, "supervisor.pid").write_text(str(os.getpid()))
    _file(unit, "result").unlink(missing_ok=True)
    starts: list[float] = []
    restarts = 0
    result = "inactive"
    with _file(unit, "journal").open("ab") as log:
        while not stopping:
            now = time.monotonic()
            starts = [t for t in starts if now - t < START_LIMIT_INTERVAL_S] + [now]
            if len(starts) > START_LIMIT_BURST:
                _journal(unit, f"{_name(unit)}: Start request repeated too quickly.")
                _journal(unit, f"{_name(unit)}: Failed with result 'start-limit-hit'.")
                result = "failed"
                break
            _journal(unit, f"Started {svc['description'] or _name(unit)}.")
            child = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
                                     cwd=svc.get("WorkingDirectory") or "/")
            _file(unit, "main.pid").write_text(str(child.pid))
            _file(unit, "since").write_text(time.strftime("%a %Y-%m-%d %H:%M:%S UTC", time.gmtime()))
            while True:
                try:
                    code = child.wait()
                    break
                except InterruptedError:
                    continue
            _file(unit, "main.pid").unlink(missing_ok=True)
            how = f"code=exited, status={code}" if code >= 0 else f"code=killed, status={-code}/{signal.Signals(-code).name}"
            _journal(unit, f"{_name(unit)}: Main process exited, {how}")
            if stopping:
                break
            failed = code != 0
            if restart == "always" or (restart == "on-failure" and failed):
                restarts += 1
                _file(unit, "restarts").write_text(str(restarts))
                time.sleep(restart_s)
                _journal(unit, f"{_name(unit)}: Scheduled restart job, restart counter is at {restarts}.")
                continue
            result = "failed" if failed else "inactive"
            break
    _file(unit, "result").write_text(result)
    _file(unit, "supervisor.pid").unlink(missing_ok=True)
    if stopping:
        _journal(unit, f"Stopped {svc['description'] or _name(unit)}.")
    return 0


# ---- the commands ---------------------------------------------------------------------------------


def start(unit: str) -> int:
    if active_state(unit) in ("active", "activating"):
        return 0
    _service(unit)
    _file(unit, "restarts").write_text("0")
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "--supervise", _name(unit)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and active_state(unit) not in ("active", "failed"):
        time.sleep(0.05)
    return 0


def stop(unit: str) -> int:
    pid = _read(_file(unit, "supervisor.pid"))
    if _alive(pid):
        os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        main_pid = _read(_file(unit, "main.pid"))
        for p in (pid, main_pid):
            if _alive(p):
                os.kill(int(p), signal.SIGKILL)
    for kind in ("supervisor.pid", "main.pid"):
        _file(unit, kind).unlink(missing_ok=True)
    _file(unit, "result").write_text("inactive")
    return 0


def status(unit: str, n_lines: int = 10) -> int:
    svc = _service(unit)
    state = active_state(unit)
    enabled = "enabled" if _file(unit, "enabled").exists() else "disabled"
    main_pid = _read(_file(unit, "main.pid"))
    print(f"● {_name(unit)} - {svc['description']}")
    print(f"     Loaded: loaded ({svc['path']}; {enabled}; preset: enabled)  [board EMULATOR supervisor]")
    running = " (running)" if state == "active" else ""
    print(f"     Active: {state}{running} since {_read(_file(unit, 'since'), '-')}")
    if state == "active":
        print(f"   Main PID: {main_pid} ({Path(shlex.split(svc['ExecStart'])[0]).name})")
    print(f"   Restarts: {_read(_file(unit, 'restarts'), '0')}")
    lines = _read(_file(unit, "journal")).splitlines()[-n_lines:] if n_lines > 0 else []
    if lines:
        print()
        print("\n".join(lines))
    return 0 if state == "active" else 3


def show(unit: str, props: list[str], value_only: bool) -> int:
    values = {"MainPID": _read(_file(unit, "main.pid"), "0") if active_state(unit) == "active" else "0",
              "NRestarts": _read(_file(unit, "restarts"), "0"), "ActiveState": active_state(unit),
              "UnitFileState": "enabled" if _file(unit, "enabled").exists() else "disabled"}
    for p in props or list(values):
        print(values.get(p, "") if value_only else f"{p}={values.get(p, '')}")
    return 0


def journalctl(argv: list[str]) -> int:
    unit, n = None, 50
    it = iter(argv)
    for a in it:
        if a in ("-u", "--unit"):
            unit = next(it, None)
        elif a in ("-n", "--lines"):
            n = int(next(it, "50"))
        elif a.startswith("--unit="):
            unit = a.split("=", 1)[1]
    if unit is None:
        print("journalctl [EMULATOR]: give -u UNIT", file=sys.stderr)
        return 1
    lines = _read(_file(unit, "journal")).splitlines()
    print("\n".join(lines[-n:]) if lines else "-- No entries --")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--journalctl"]:
        return journalctl(argv[1:])
    if argv[:1] == ["--supervise"]:
        return supervise(argv[1])
    if argv[:1] == ["--boot"]:
        for f in sorted(state_dir().glob("*.service.enabled")):
            start(f.name[: -len(".enabled")])
        return 0
    flags = [a for a in argv if a.startswith("-")]
    args = [a for a in argv if not a.startswith("-")]
    props = []
    for i, a in enumerate(argv):
        if a == "-p" and i + 1 < len(argv):
            props += argv[i + 1].split(",")
            args.remove(argv[i + 1])
    if not args:
        print("systemctl [EMULATOR]: give a command", file=sys.stderr)
        return 1
    cmd, units = args[0], args[1:]
    now = "--now" in flags
    if cmd == "daemon-reload":
        return 0
    if not units:
        print(f"systemctl [EMULATOR]: {cmd} needs a unit", file=sys.stderr)
        return 1
    rc = 0
    for unit in units:
        if cmd == "enable":
            _service(unit)
            _file(unit, "enabled").touch()
            rc |= start(unit) if now else 0
        elif cmd == "disable":
            _file(unit, "enabled").unlink(missing_ok=True)
            rc |= stop(unit) if now else 0
        elif cmd == "start":
            rc |= start(unit)
        elif cmd == "stop":
            rc |= stop(unit)
        elif cmd == "restart":
            stop(unit)
            rc |= start(unit)
        elif cmd == "is-active":
            state = active_state(unit)
            print(state)
            rc |= 0 if state == "active" else 3
        elif cmd == "is-enabled":
            on = _file(unit, "enabled").exists()
            print("enabled" if on else "disabled")
            rc |= 0 if on else 1
        elif cmd == "status":
            n_lines = [int(f.split("=", 1)[1]) for f in flags if f.startswith("--lines=")]
            rc |= status(unit, *n_lines[-1:])
        elif cmd == "show":
            rc |= show(unit, props, "--value" in flags)
        else:
            print(f"systemctl [EMULATOR]: {cmd} is not emulated", file=sys.stderr)
            return 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
