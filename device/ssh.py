"""SSH to a board without surprises: verified host keys, no ssh_config, no agent, quoted remote commands.

Fabric's default is to accept any host key (paramiko ``AutoAddPolicy``); :func:`connect` replaces that
with a check against a known_hosts file. An unknown key is refused unless ``accept_new_host_key`` is set,
in which case it is appended to that file (trust on first use, logged with its fingerprint); a changed key
is always refused. The password, if any, comes from an environment variable or a prompt and is handed to
paramiko only - it is never logged or written.

Example::

    python -c "from device.ssh import BoardSpec, connect; c = connect(BoardSpec('127.0.0.1', port=2222, \
key_filename='build/board-emulator/id_ed25519')); print(c.run('uname -a').stdout)"
"""

from __future__ import annotations

import base64
import dataclasses
import getpass
import hashlib
import logging
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.runners import Result

from pipeline.core.cli import StageError

log = logging.getLogger(__name__)

DEFAULT_USER = "root"  # the M5Stack LLM Kit logs in as root (docs.m5stack.com, module_llm/config)
# /opt/kws: an absolute path that does not depend on the login user's home, next to the board's own
# /opt/bin tools on the eMMC root file system, and outside the vendor's /opt/m5stack tree.
DEFAULT_REMOTE_ROOT = "/opt/kws"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
PASSWORD_ENV = "KWS_BOARD_PASSWORD"


class DeviceError(StageError):
    """Something about the board or the connection is wrong; the message says what and how to fix it."""


class ConnectionLost(DeviceError):
    """The SSH connection dropped while a remote command ran."""


@dataclasses.dataclass(frozen=True)
class BoardSpec:
    host: str
    port: int = 22
    user: str = DEFAULT_USER
    key_filename: str | None = None
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    accept_new_host_key: bool = False
    password: str | None = dataclasses.field(default=None, repr=False)
    connect_timeout_s: int = 15

    @property
    def label(self) -> str:
        """A file-name-safe name for local report folders: ``host`` or ``host_port``."""
        name = self.host if self.port == 22 else f"{self.host}_{self.port}"
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def resolve_password(prompt: bool, env_var: str = PASSWORD_ENV, who: str = "board") -> str | None:
    """The SSH password from ``$env_var`` or, if ``prompt``, from the terminal; ``None`` means key-only."""
    value = os.environ.get(env_var)
    if value:
        return value
    if prompt:
        return getpass.getpass(f"SSH password for {who}: ")
    return None


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise DeviceError(
            f"{hostname}: host key {fingerprint(key)} is not in {self.known_hosts}; check it on the board "
            "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and re-run with --accept-new-host-key "
            "(or --known-hosts FILE that lists it)"
        )


class _AcceptNewKey(paramiko.MissingHostKeyPolicy):
    """Trust on first use: remember the key in the known_hosts file. A *changed* key never gets here."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        log.warning("accepted NEW host key for %s: %s (saved to %s)", hostname, fingerprint(key), self.known_hosts)


def connect(spec: BoardSpec) -> Connection:
    """A fabric Connection that verifies the host key against ``spec.known_hosts`` (not yet opened)."""
    known_hosts = Path(spec.known_hosts).expanduser()
    connect_kwargs: dict[str, object] = {"allow_agent": False, "look_for_keys": False}
    if spec.key_filename:
        key = Path(spec.key_filename).expanduser()
        if not key.is_file():
            raise DeviceError(f"{key}: SSH private key not found; pass --key PATH to an existing key")
        connect_kwargs["key_filename"] = [str(key)]
    if spec.password:
        connect_kwargs["password"] = spec.password
    if not spec.key_filename and not spec.password:
        raise DeviceError(
            f"{spec.host}: no way to log in; pass --key PATH, or set ${PASSWORD_ENV}, or use --password-prompt"
        )
    # An empty SSHConfig: ~/.ssh/config and /etc/ssh/ssh_config must not change where or how we connect.
    config = Config(ssh_config=paramiko.SSHConfig(), overrides={"load_ssh_configs": False})
    conn = Connection(
        spec.host, user=spec.user, port=spec.port, config=config, connect_kwargs=connect_kwargs,
        connect_timeout=spec.connect_timeout_s, forward_agent=False,
    )
    if known_hosts.is_file():
        conn.client.load_host_keys(str(known_hosts))
    elif not spec.accept_new_host_key:
        raise DeviceError(
            f"{known_hosts}: known_hosts file not found, so {spec.host} cannot be verified; "
            "pass --known-hosts FILE or --accept-new-host-key to trust the board's key on first use"
        )
    policy = _AcceptNewKey(known_hosts) if spec.accept_new_host_key else _RefuseUnknownKey(known_hosts)
    conn.client.set_missing_host_key_policy(policy)
    return conn


def open_connection(conn: Connection) -> Connection:
    """Open ``conn`` and turn paramiko/socket failures into one clear :class:`DeviceError`."""
    where = f"{conn.user}@{conn.host}:{conn.port}"
    try:
        conn.open()
    except DeviceError:
        raise
    except paramiko.BadHostKeyException as e:
        raise DeviceError(
            f"{where}: host key CHANGED (got {fingerprint(e.key)}, known_hosts has {fingerprint(e.expected_key)}); "
            "if the board was reinstalled, remove the old line from known_hosts; otherwise do not connect"
        ) from None
    except paramiko.AuthenticationException as e:
        raise DeviceError(f"{where}: authentication failed ({e}); check --user and --key / the password") from None
    except (TimeoutError, OSError, paramiko.SSHException, EOFError) as e:
        raise DeviceError(f"{where}: cannot connect ({type(e).__name__}: {e}); is the board up and sshd listening?") from None
    return conn


def check_remote_root(remote_root: str) -> str:
    """A normalised absolute remote path; refuses relative paths, '..', newlines and NULs."""
    if not remote_root.startswith("/") or any(ch in remote_root for ch in "\n\r\0"):
        raise DeviceError(f"--remote-root {remote_root!r}: must be an absolute path on one line, e.g. /opt/kws")
    parts = [p for p in remote_root.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise DeviceError(f"--remote-root {remote_root!r}: no '..' components and not '/' itself; e.g. /opt/kws")
    return "/" + "/".join(parts)


def script_command(script: str, args: Sequence[str], shell: str = "sh") -> str:
    """``sh -c '<script>' kws 'arg1' 'arg2' …``: every argument shell-quoted, the script is one word."""
    return " ".join([shell, "-c", shlex.quote(script), "kws", *(shlex.quote(str(a)) for a in args)])


def run_script(conn: Connection, script: str, args: Sequence[str], what: str, shell: str = "sh") -> Result:
    """Run a script (POSIX sh, or bash where asked) on the board in one round trip; ConnectionLost if the link drops."""
    try:
        result = conn.run(script_command(script, args, shell), hide=True, warn=True, in_stream=False)
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise ConnectionLost(f"{getattr(conn, 'host', '?')}: connection lost during {what} ({type(e).__name__}: {e})") from None
    transport = getattr(conn, "transport", None)  # None for an invoke MockContext standing in for a board
    if result.exited == -1 or (transport is not None and not transport.is_active()):
        raise ConnectionLost(f"{getattr(conn, 'host', '?')}: connection lost during {what} (no exit status)")
    return result


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
