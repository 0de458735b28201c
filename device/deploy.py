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
from device.remote import script
from device.ssh import DeviceError, check_remote_root, run_script, tail

log = logging.getLogger(__name__)

def probe(conn: Connection, remote_root: str, bundle_id: str, create_root: bool = False,
          check_files: bool = False) -> dict[str, Any]:
    """One round trip: ax_run_model path, emulator?, bundle present?, current link, hostname, arch."""
    r = run_script(conn, script("probe"), [remote_root, bundle_id, "1" if create_root else "0",
                                          "1" if check_files else "0", COMPLETE_MARKER, SUMS_NAME], "probe")
    if r.exited != 0:
        raise DeviceError(f"{conn.host}: cannot prepare {remote_root} on the board: {tail(r.stderr)}")
    info = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return {
        "ax_run_model": info.get("ax_run_model") or None,
        "emulator": info.get("emulator") == "1",
        "bundle_present": info.get("bundle") == "present",
        "damaged": [f for f in info.get("damaged", "").split(";") if f] if info.get("bundle") == "damaged" else [],
        "current": info.get("current") or None,
        "avail_bytes": int(info["avail_kb"]) * 1024 if info.get("avail_kb", "").isdigit() else None,
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


def deploy(conn: Connection, build: str | Path, remote_root: str, allow_emulated: bool = False,
           force: bool = False) -> dict[str, Any]:
    """Make sure the current bundle is on the board, intact (every file against SHA256SUMS) and active; returns
    what happened (bytes transferred). ``force``: upload and install it again even if an intact copy is there."""
    root = check_remote_root(remote_root)
    t0 = time.monotonic()
    bundle = collect_bundle(build)
    board = probe(conn, root, bundle.bundle_id, create_root=True, check_files=True)
    check_emulated(bundle, board, conn.host, allow_emulated)
    result: dict[str, Any] = {
        "host": conn.host, "port": conn.port, "bundle_id": bundle.bundle_id, "remote_dir": f"{root}/{bundle.bundle_id}",
        "files": len(bundle.files), "emulated_axmodel": bundle.emulated, "board": board,
    }
    if board["damaged"] or (force and board["bundle_present"]):
        if board["damaged"]:
            log.warning("%s: the board's copy of bundle %s is damaged (%s); uploading it again", conn.host,
                        bundle.bundle_id, "; ".join(board["damaged"]))
        r = run_script(conn, script("unmark"), [root, bundle.bundle_id, COMPLETE_MARKER], "unmark")
        if r.exited != 0:
            raise DeviceError(f"{conn.host}: cannot replace {root}/{bundle.bundle_id}: {tail(r.stderr)}")
        result["replaced"] = "damaged" if board["damaged"] else "forced"
    elif board["bundle_present"]:
        if board["current"] != bundle.bundle_id:
            r = run_script(conn, script("activate"), [root, bundle.bundle_id], "activate")
            if r.exited != 0:
                raise DeviceError(f"{conn.host}: cannot point {root}/current at {bundle.bundle_id}: {tail(r.stderr)}")
        log.info("%s: bundle %s already on the board; nothing transferred", conn.host, bundle.bundle_id)
        return {**result, "status": "unchanged", "transferred_bytes": 0, "seconds": round(time.monotonic() - t0, 3)}
    with tempfile.TemporaryDirectory(prefix="kws-deploy-") as tmp:
        archive, digest, size = write_archive(bundle, Path(tmp))
        # the archive and the unpacked files coexist until the install finishes
        need = size + sum(p.stat().st_size for p in bundle.files.values()) + (1 << 20)
        if board["avail_bytes"] is not None and board["avail_bytes"] < need:
            raise DeviceError(f"{conn.host}: disk full on the board: need {need / 1e6:.1f} MB in {root}, have "
                              f"{board['avail_bytes'] / 1e6:.1f} MB; free space there or deploy to another "
                              "--remote-root")
        remote_archive = f"{root}/.incoming/{bundle.bundle_id}-{secrets.token_hex(4)}.tar.gz"
        try:
            conn.put(str(archive), remote_archive)
        except (OSError, EOFError) as e:
            run_script(conn, 'rm -f "$1"', [remote_archive], "remove the partial upload")
            raise DeviceError(f"{conn.host}: upload of {archive.name} to {remote_archive} failed ({e}); the partial "
                              "upload was removed") from None
    r = run_script(conn, script("install"), [root, bundle.bundle_id, remote_archive, digest, COMPLETE_MARKER, SUMS_NAME],
                   "install")
    if r.exited != 0:
        raise DeviceError(f"{conn.host}: installing bundle {bundle.bundle_id} failed: {tail(r.stderr)}")
    log.info("%s: bundle %s installed (%d files, %d bytes in one archive)", conn.host, bundle.bundle_id, len(bundle.files), size)
    return {**result, "status": "deployed", "transferred_bytes": size, "archive_sha256": digest,
            "seconds": round(time.monotonic() - t0, 3)}


def verify(conn: Connection, remote_root: str) -> dict[str, Any]:
    """Re-hash the active bundle on the board; ``damaged`` lists the files that no longer match SHA256SUMS."""
    root = check_remote_root(remote_root)
    r = run_script(conn, script("verify"), [root, SUMS_NAME, COMPLETE_MARKER], "verify")
    if r.exited == 0:
        _, bundle_id, n = r.stdout.split()
        return {"host": conn.host, "bundle_id": bundle_id, "files": int(n), "damaged": []}
    if r.exited == 1:
        return {"host": conn.host, "damaged": [line for line in r.stdout.splitlines() if line.strip()]}
    raise DeviceError(f"{conn.host}: {tail(r.stderr) or 'verify failed'}")
