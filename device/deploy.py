"""Deploy the bundle (axmodel + board inputs) to a versioned directory on the board.

One probe round trip (is the bundle already there? which ax_run_model? is it the EMULATOR?), then, only
if the bundle is new: one archive upload, one remote script that checks the archive's sha256, unpacks
it into a staging directory, checks every file against SHA256SUMS, and renames it into place
(``<remote_root>/<bundle-id>``) before pointing ``<remote_root>/current`` at it (rename of a new symlink,
so it is atomic too). Nothing outside ``<remote_root>`` is written.

Whether the board is the emulator is decided by the board's own ``ax_run_model --help``: the board
emulator's help text says EMULATOR; Axera's tool does not. (The emulator image also has a marker file,
/etc/ax-board-emulator, for people; the tool that will run the model is what counts here.)

Example (via invoke)::

    invoke deploy --host 192.168.1.50 --key ~/.ssh/id_ed25519
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from fabric import Connection

from device.bundle import COMPLETE_MARKER, SUMS_NAME, Bundle, collect_bundle, write_archive
from device.ssh import DeviceError, check_remote_root, run_script, tail

log = logging.getLogger(__name__)

PROBE_SCRIPT = r"""
root=$1 id=$2 mk=$3
if [ "$mk" = 1 ]; then
  mkdir -p "$root/.incoming" || exit 3
  find "$root/.incoming" -maxdepth 1 -type f -mmin +60 -exec rm -f {} + 2>/dev/null  # uploads cut off long ago
fi
ax=$(command -v ax_run_model 2>/dev/null || true)
if [ -z "$ax" ] && [ -x /opt/bin/ax_run_model ]; then ax=/opt/bin/ax_run_model; fi
echo "ax_run_model=$ax"
emu=0
if [ -n "$ax" ] && "$ax" --help 2>&1 | grep -q EMULATOR; then emu=1; fi
echo "emulator=$emu"
if [ -f "$root/$id/COMPLETE" ]; then echo "bundle=present"; else echo "bundle=absent"; fi
echo "current=$(readlink "$root/current" 2>/dev/null || true)"
echo "hostname=$(hostname 2>/dev/null || cat /etc/hostname 2>/dev/null)"
echo "arch=$(uname -m)"
""".replace("COMPLETE", COMPLETE_MARKER)

INSTALL_SCRIPT = r"""
set -u
root=$1 id=$2 archive=$3 want=$4
stage="$root/.staging-$id-$$"
fail() { echo "error: $*" >&2; rm -rf "$stage" "$archive"; exit 3; }
got=$(sha256sum "$archive" | cut -d' ' -f1) || fail "cannot read the uploaded archive $archive"
[ "$got" = "$want" ] || fail "uploaded archive sha256 $got differs from the local $want (damaged in transfer)"
mkdir -p "$stage" || fail "cannot create $stage"
tar -xzf "$archive" -C "$stage" || fail "cannot unpack $archive"
bad=$(cd "$stage/$id" && sha256sum -c --quiet --strict SUMS 2>&1) || fail "sha256 check failed on the board: $bad"
: > "$stage/$id/COMPLETE" || fail "cannot write the completion marker"
if [ -f "$root/$id/COMPLETE" ]; then
  echo "already present (installed concurrently)"
else
  if [ -e "$root/$id" ]; then
    mv -T "$root/$id" "$stage/replaced" || fail "cannot move the incomplete $root/$id aside"
  fi
  # a concurrent installer of the same bundle (two names for one board) may have moved its copy in first
  mv -T "$stage/$id" "$root/$id" || [ -f "$root/$id/COMPLETE" ] || fail "cannot move the bundle into place"
fi
ln -sfn "$id" "$root/.current-$$" && mv -T "$root/.current-$$" "$root/current" || fail "cannot update $root/current"
rm -rf "$stage" "$archive"
echo "installed $root/$id"
""".replace("COMPLETE", COMPLETE_MARKER).replace("SUMS", SUMS_NAME)

ACTIVATE_SCRIPT = r"""
root=$1 id=$2
ln -sfn "$id" "$root/.current-$$" && mv -T "$root/.current-$$" "$root/current"
"""


def probe(conn: Connection, remote_root: str, bundle_id: str, create_root: bool = False) -> dict[str, Any]:
    """One round trip: ax_run_model path, emulator?, bundle present?, current link, hostname, arch."""
    r = run_script(conn, PROBE_SCRIPT, [remote_root, bundle_id, "1" if create_root else "0"], "probe")
    if r.exited != 0:
        raise DeviceError(f"{conn.host}: cannot prepare {remote_root} on the board: {tail(r.stderr)}")
    info = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return {
        "ax_run_model": info.get("ax_run_model") or None,
        "emulator": info.get("emulator") == "1",
        "bundle_present": info.get("bundle") == "present",
        "current": info.get("current") or None,
        "hostname": info.get("hostname", ""),
        "arch": info.get("arch", ""),
    }


def check_emulated(bundle: Bundle, board: dict[str, Any], host: str, allow_emulated: bool) -> None:
    if bundle.emulated and not board["emulator"] and not allow_emulated:
        raise DeviceError(
            f"{bundle.axmodel}: is an EMULATED axmodel (made by the Pulsar2 emulator, no real NPU code) and "
            f"{host}'s ax_run_model ({board['ax_run_model'] or 'not found'}) is not the board emulator; build a "
            "real axmodel with the Pulsar2 image (make axmodel PULSAR2_IMAGE=pulsar2:<ver>), or pass "
            "--allow-emulated to copy it anyway"
        )
    if not bundle.emulated and board["emulator"]:
        log.warning("%s: deploying a REAL axmodel to the board EMULATOR, which will refuse to run it", host)


def deploy(conn: Connection, build: str | Path, remote_root: str, allow_emulated: bool = False) -> dict[str, Any]:
    """Make sure the current bundle is on the board and active; returns what happened (bytes transferred)."""
    root = check_remote_root(remote_root)
    t0 = time.monotonic()
    bundle = collect_bundle(build)
    board = probe(conn, root, bundle.bundle_id, create_root=True)
    check_emulated(bundle, board, conn.host, allow_emulated)
    result: dict[str, Any] = {
        "host": conn.host, "port": conn.port, "bundle_id": bundle.bundle_id, "remote_dir": f"{root}/{bundle.bundle_id}",
        "files": len(bundle.files), "emulated_axmodel": bundle.emulated, "board": board,
    }
    if board["bundle_present"]:
        if board["current"] != bundle.bundle_id:
            r = run_script(conn, ACTIVATE_SCRIPT, [root, bundle.bundle_id], "activate")
            if r.exited != 0:
                raise DeviceError(f"{conn.host}: cannot point {root}/current at {bundle.bundle_id}: {tail(r.stderr)}")
        log.info("%s: bundle %s already on the board; nothing transferred", conn.host, bundle.bundle_id)
        return {**result, "status": "unchanged", "transferred_bytes": 0, "seconds": round(time.monotonic() - t0, 3)}
    with tempfile.TemporaryDirectory(prefix="kws-deploy-") as tmp:
        archive, digest, size = write_archive(bundle, Path(tmp))
        remote_archive = f"{root}/.incoming/{bundle.bundle_id}-{secrets.token_hex(4)}.tar.gz"
        try:
            conn.put(str(archive), remote_archive)
        except (OSError, EOFError) as e:
            raise DeviceError(f"{conn.host}: upload of {archive.name} to {remote_archive} failed ({e})") from None
    r = run_script(conn, INSTALL_SCRIPT, [root, bundle.bundle_id, remote_archive, digest], "install")
    if r.exited != 0:
        raise DeviceError(f"{conn.host}: installing bundle {bundle.bundle_id} failed: {tail(r.stderr)}")
    log.info("%s: bundle %s installed (%d files, %d bytes in one archive)", conn.host, bundle.bundle_id, len(bundle.files), size)
    return {**result, "status": "deployed", "transferred_bytes": size, "archive_sha256": digest,
            "seconds": round(time.monotonic() - t0, 3)}
