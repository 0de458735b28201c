"""The built images, exercised with a real Docker daemon (marker ``docker``; CI builds the images first).

Enable locally: ``invoke docker.start && invoke images.base && invoke images --base-image kws-base:bookworm``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.docker.conftest import ROOT, docker_cli, require_image

pytestmark = pytest.mark.docker


def run(*cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=timeout)


def inspect(docker: str, ref: str) -> dict:
    r = run(docker, "image", "inspect", ref)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def test_stage_in_training_image_writes_user_owned_files_with_the_image_id(tmp_path: Path) -> None:
    """What the Makefile's RUN does: -u uid:gid, the tree mounted at its own path, KWS_IMAGE_ID set."""
    docker = docker_cli()
    tag = require_image(docker, "train")
    image_id = inspect(docker, tag)["Id"]
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the container user is not root (pytest's own tmp root is 0700: mount the folder alone)
    code = ("from pipeline.core.io import atomic_write_json; from pipeline.core.provenance import manifest; import sys; "
            "atomic_write_json(sys.argv[1], manifest('smoke'))")
    r = run(docker, "run", "--rm", "--network", "none", "-u", "1234:2345", "-e", "HOME=/tmp",
            "-e", f"KWS_IMAGE_ID={image_id}", "-v", f"{ROOT}:{ROOT}:ro", "-v", f"{out}:/out", "-w", str(ROOT),
            image_id, "python3", "-c", code, "/out/manifest.json")
    assert r.returncode == 0, r.stderr
    st = (out / "manifest.json").stat()
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    prov = json.loads((out / "manifest.json").read_text())["provenance"]
    assert prov["image_id"] == image_id
    assert prov["libraries"]["torch"] == "2.14.1" and prov["libraries"]["torchaudio"] == "2.11.0"
    assert prov["libraries"]["python"].startswith("3.11.")


def test_training_image_carries_nothing_from_the_build_host() -> None:
    docker = docker_cli()
    tag = require_image(docker, "train")
    env = inspect(docker, tag)["Config"]["Env"]
    assert not [e for e in env if e.split("=", 1)[0] in {"PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE",
                                                         "PIP_INDEX_URL", "PIP_FIND_LINKS"}]
    r = run(docker, "run", "--rm", "--network", "none", tag, "sh", "-c",
            "ls /run/secrets 2>/dev/null; pip config list; ls /etc/pip.conf /etc/xdg/pip 2>/dev/null; "
            "test ! -e /work/main && echo no-tree")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[-1] == "no-tree"  # the code is not baked in
    # pip settings: only the image's own two ENV defaults; no secret file, no config file, no CA or index.
    assert sorted(lines[:-1]) == [":env:.disable-pip-version-check='1'", ":env:.no-cache-dir='1'"]


def test_pulsar2_emulator_image_is_labelled_and_built_on_the_training_image() -> None:
    docker = docker_cli()
    emu = inspect(docker, require_image(docker, "pulsar2-emulator"))
    train = inspect(docker, require_image(docker, "train"))
    assert emu["Config"]["Labels"]["org.kws.emulator"] == "true"
    assert "KWS_PULSAR2_EMULATOR=1" in emu["Config"]["Env"]
    layers, base = emu["RootFS"]["Layers"], train["RootFS"]["Layers"]
    if layers[: len(base)] != base:
        pytest.skip("kws-pulsar2-emulator:latest was built on an older kws-train: rebuild with `invoke images`")
    r = run(docker, "run", "--rm", "--network", "none", emu["Id"], "pulsar2", "version")
    assert r.returncode == 0, r.stderr
    assert "EMULATOR" in r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_board_emulator_answers_ssh_on_loopback(tmp_path: Path) -> None:
    docker = docker_cli()
    tag = require_image(docker, "board-emulator")
    port = _free_port()
    name = f"kws-test-board-{os.getpid()}"
    r = run(docker, "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:22", tag)
    assert r.returncode == 0, r.stderr
    try:
        banner = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not banner.startswith(b"SSH-"):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    banner = s.recv(64)
            except OSError:
                time.sleep(0.2)
        assert banner.startswith(b"SSH-2.0-"), f"no SSH banner on 127.0.0.1:{port}: {banner!r}"
        r = run(docker, "exec", name, "sh", "-c", "ax_run_model --help; cat /etc/ax-board-emulator")
        assert r.returncode == 0, r.stderr
        assert "EMULATOR" in r.stdout
        r = run(docker, "exec", name, "sh", "-c", "command -v torch python3; /opt/venv/bin/python3 -c 'import torch'")
        assert r.returncode != 0  # no torch on the board emulator
    finally:
        run(docker, "rm", "-f", name)
