"""docker/base-image.sh with stand-in debootstrap and docker: what it bootstraps and what it imports."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.docker.conftest import ROOT

FAKE_DEBOOTSTRAP = """#!/bin/sh
echo "$@" > "$FAKE_DIR/debootstrap.args"
[ -z "${FAKE_DEBOOTSTRAP_FAILS:-}" ] || { echo "E: Couldn't download packages" ; exit 1; }
root="$4"
mkdir -p "$root/usr/bin" "$root/var/lib/apt/lists" "$root/var/log" "$root/tmp"
echo python > "$root/usr/bin/python3"
echo stale > "$root/var/lib/apt/lists/deb.debian.org_dists"
echo log > "$root/var/log/bootstrap.log"
"""

FAKE_DOCKER = """#!/bin/sh
case "$1" in
  import) shift; echo "$@" > "$FAKE_DIR/import.args"; cat > "$FAKE_DIR/rootfs.tar" ;;
  run) echo "base-image.sh: smoke test: python 3.11.2" ;;
  *) exit 3 ;;
esac
"""


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fakes(tmp_path: Path) -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.skip("base-image.sh refuses to run without root (run the tests as root, as CI does)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _exe(bindir / "debootstrap", FAKE_DEBOOTSTRAP)
    _exe(bindir / "docker", FAKE_DOCKER)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path),
            "DOCKER": str(bindir / "docker")}


def test_bootstraps_bookworm_minbase_and_imports_a_clean_rootfs(fakes: dict[str, str], tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(ROOT / "docker" / "base-image.sh"), "kws-base:test"], env=fakes,
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "debootstrap.args").read_text().split()
    assert args[:3] == ["--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm"]
    assert args[4] == "http://deb.debian.org/debian"
    imp = (tmp_path / "import.args").read_text()
    assert imp.rstrip().endswith("- kws-base:test") and "CMD [\"/bin/bash\"]" in imp
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "rootfs.tar").read_bytes())) as tar:
        names = {n.lstrip("./") for n in tar.getnames()}
    assert "usr/bin/python3" in names
    # Apt lists and bootstrap logs are not shipped.
    assert not {n for n in names if n.startswith(("var/lib/apt/lists/", "var/log/"))} - {"var/lib/apt/lists/", "var/log/"}
    assert "built kws-base:test" in r.stdout


def test_debootstrap_failure_is_reported_and_nothing_imported(fakes: dict[str, str], tmp_path: Path) -> None:
    env = {**fakes, "FAKE_DEBOOTSTRAP_FAILS": "1"}
    r = subprocess.run(["bash", str(ROOT / "docker" / "base-image.sh")], env=env, capture_output=True, text=True,
                       check=False, timeout=120)
    assert r.returncode == 1
    assert "Couldn't download packages" in r.stderr and "debootstrap failed" in r.stderr
    assert not (tmp_path / "import.args").exists()
