"""Fixtures for the board tests: a REAL sshd on 127.0.0.1 serving the board EMULATOR, and tiny artifacts.

One sshd per session (own port, own host key, StrictModes no). Two client keys, each with its own
environment from authorized_keys ``environment=`` (PermitUserEnvironment yes):

* ``board``: PATH starts with a private bin dir whose ``ax_run_model`` is the emulator (nothing is written
  to the host's /opt/bin) and AX_EMULATOR_CALL_LOG records every inferred input as ``<pid> <k>``;
* ``plain``: PATH has a stand-in for Axera's real tool (help text without EMULATOR), i.e. "not the emulator".
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.emulator.launch import (
    BASE_PATH,
    LoopbackBoard,
    board_environment,
    free_port,
    install_emulator_bin,
    start_local_sshd,
)
from device.ssh import BoardSpec, connect, open_connection
from tests.device.tiny_model import make_build

PLAIN_TOOL = """#!/bin/sh
echo "Usage: ax_run_model -m MODEL [-w N] [-r N] [-i DIR -o DIR -l LIST]"
echo "[ERROR] this stand-in for Axera's ax_run_model cannot run models" >&2
exit 1
"""


@pytest.fixture(scope="session")
def loopback_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackBoard]:
    if not Path("/usr/sbin/sshd").exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd not found: apt-get install openssh-server (CI installs it)")
    state = tmp_path_factory.mktemp("board")
    emu_bin, plain_bin = state / "emubin", state / "plainbin"
    install_emulator_bin(emu_bin, sys.executable)
    plain_bin.mkdir()
    (plain_bin / "ax_run_model").write_text(PLAIN_TOOL)
    (plain_bin / "ax_run_model").chmod(0o755)
    home = state / "home"  # its own HOME: the host root's ~/.bashrc (pyenv init, ~1 s) is not sourced per command
    home.mkdir()
    (state / "systemd" / "system").mkdir(parents=True)
    clients = {
        "board": {**board_environment(state, emu_bin), "AX_EMULATOR_CALL_LOG": str(state / "calls.log")},
        "plain": {"PATH": f"{plain_bin}:{BASE_PATH}", "HOME": str(home)},
    }
    board = start_local_sshd(state, free_port(), clients)
    yield board
    board.stop()


@pytest.fixture
def call_log(loopback_board: LoopbackBoard) -> Path:
    """The emulator's per-inference log, emptied for this test."""
    path = loopback_board.state_dir / "calls.log"
    path.write_text("")
    return path


def board_spec(board: LoopbackBoard, client: str = "board", **kw) -> BoardSpec:
    kw.setdefault("known_hosts", str(board.known_hosts))
    return BoardSpec("127.0.0.1", board.port, key_filename=str(board.client_key(client)), **kw)


@pytest.fixture
def conn(loopback_board: LoopbackBoard):
    c = open_connection(connect(board_spec(loopback_board)))
    yield c
    c.close()


@pytest.fixture
def remote_root(tmp_path: Path) -> Path:
    """The board's work dir for one test (the 'board' is this machine, so it is a local path too)."""
    root = tmp_path / "board root"
    root.mkdir()
    return root / "kws"


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path / "build", n_inputs=4)
