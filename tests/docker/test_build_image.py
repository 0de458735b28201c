"""docker/build_image.py: client choice, CA secret, build command, id file; with a fake docker CLI."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from pipeline.core.cli import StageError
from tests.docker.conftest import ROOT, load_script

bi = load_script("build_image")

FAKE_DOCKER = r"""#!/usr/bin/env bash
# A stand-in docker CLI: logs every call (argv + DOCKER_BUILDKIT) and imitates the few answers build_image needs.
echo "BUILDKIT=${DOCKER_BUILDKIT:-} $*" >> "$FAKE_LOG"
case "$1" in
  version) echo "${FAKE_VERSION:-20.10.24+dfsg1}" ;;
  buildx) [ -n "${FAKE_BUILDX:-}" ] || exit 1 ;;
  image) [ -z "${FAKE_NO_IMAGE:-}" ] || exit 1; echo "sha256:$(printf 'b%.0s' {1..64})" ;;
  pull) echo "Error response from daemon: no registry" >&2; exit 1 ;;
  tag) ;;
  build)
    [ -z "${FAKE_BUILD_FAILS:-}" ] || { echo "RUN failed" >&2; exit 1; }
    while [ $# -gt 0 ]; do
      if [ "$1" = "--iidfile" ]; then printf 'sha256:%s' "$(printf 'c%.0s' {1..64})" > "$2"; fi
      shift
    done ;;
  *) exit 3 ;;
esac
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    exe = tmp_path / "bin" / "docker"
    exe.parent.mkdir()
    exe.write_text(FAKE_DOCKER)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "docker.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    for var in ("FAKE_VERSION", "FAKE_BUILDX", "FAKE_NO_IMAGE", "FAKE_BUILD_FAILS"):
        monkeypatch.delenv(var, raising=False)
    return exe, log


def test_pick_client_needs_buildx_from_client_23_on() -> None:
    v28 = bi.Client("/usr/local/bin/docker", "28.2.2", has_buildx=False)
    v28_buildx = bi.Client("/usr/local/bin/docker", "28.2.2", has_buildx=True)
    v20 = bi.Client("/usr/bin/docker", "20.10.24+dfsg1", has_buildx=False)
    assert bi.pick_client([v28, v20]) == v20
    assert bi.pick_client([v28_buildx, v20]) == v28_buildx
    assert bi.pick_client([None, v28]) is None
    assert bi.pick_client([bi.Client("x", "garbage", has_buildx=False)]) is None


def test_probe_client_reads_version_and_buildx() -> None:
    answers = {"version": subprocess.CompletedProcess([], 0, "20.10.24\n", ""),
               "buildx": subprocess.CompletedProcess([], 1, "", "unknown command")}
    c = bi.probe_client("/x/docker", run=lambda cmd: answers[cmd[1]])
    assert c == bi.Client("/x/docker", "20.10.24", has_buildx=False)

    def broken(cmd):
        raise OSError("exec format error")

    assert bi.probe_client("/x/docker", run=broken) is None


def test_candidate_paths_drop_duplicates_of_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "docker"
    real.write_text("#!/bin/sh\n")
    real.chmod(0o755)
    link = tmp_path / "docker-link"
    link.symlink_to(real)
    monkeypatch.setattr(bi, "FALLBACK_CLIENTS", (str(link), str(tmp_path / "missing")))
    assert bi.candidate_paths(str(real)) == [str(real)]


def test_ca_bundle_choice(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert bi.host_ca_bundle("", {}) is None  # --cacert '' = no secret
    assert bi.host_ca_bundle(str(ca), {}) == ca
    assert bi.host_ca_bundle(None, {"PIP_CERT": str(ca)}) == ca


def test_build_command_secret_only_with_a_bundle(tmp_path: Path) -> None:
    client = bi.Client("/usr/bin/docker", "20.10.24", has_buildx=False)
    common = {"name": "train", "dockerfile": Path("docker/train.Dockerfile"), "context": ROOT,
              "iidfile": tmp_path / "iid", "build_args": {"BASE_IMAGE": "kws-base:bookworm"}, "target": None}
    with_ca = bi.build_command(client, cacert=Path("/etc/ca.crt"), **common)
    without = bi.build_command(client, cacert=None, **common)
    assert with_ca[:2] == ["/usr/bin/docker", "build"]
    assert "id=cacert,src=/etc/ca.crt" in with_ca and "--secret" not in without
    assert "BASE_IMAGE=kws-base:bookworm" in without and without[-1] == str(ROOT)
    assert without[without.index("-t") + 1] == "kws-train:latest"


def test_parent_tag_names_the_exact_image() -> None:
    tag = bi.parent_tag(Path("build/images/train.id"), "sha256:" + "0123456789abcdef" * 4)
    assert tag == "kws-train:0123456789abcdef"


def test_main_builds_with_buildkit_and_writes_the_id_file(fake_docker, tmp_path: Path) -> None:
    exe, log = fake_docker
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    iid = tmp_path / "images" / "train.id"
    rc = bi.main(["--name", "train", "--dockerfile", str(ROOT / "docker/train.Dockerfile"), "--base-image",
                  "kws-base:bookworm", "--iidfile", str(iid), "--docker", str(exe), "--cacert", str(ca)])
    assert rc == 0
    assert iid.read_text() == "sha256:" + "c" * 64 + "\n"
    build_calls = [line for line in log.read_text().splitlines() if " build " in f" {line.split(' ', 1)[1]} "]
    assert len(build_calls) == 1
    assert build_calls[0].startswith("BUILDKIT=1 build ")
    assert f"--secret id=cacert,src={ca}" in build_calls[0]
    assert "--build-arg BASE_IMAGE=kws-base:bookworm" in build_calls[0]
    assert not list(iid.parent.glob(".iid-*"))  # the temporary id folder is gone


def test_main_from_parent_id_tags_and_passes_it(fake_docker, tmp_path: Path) -> None:
    exe, log = fake_docker
    parent = tmp_path / "images" / "train.id"
    parent.parent.mkdir()
    parent.write_text("sha256:" + "d" * 64)
    out = tmp_path / "images" / "pulsar2-emulator.id"
    rc = bi.main(["--name", "pulsar2-emulator", "--dockerfile", str(ROOT / "docker/pulsar2-emulator.Dockerfile"),
                  "--from-iidfile", str(parent), "--iidfile", str(out), "--docker", str(exe), "--cacert", ""])
    assert rc == 0
    text = log.read_text()
    assert f"tag sha256:{'d' * 64} kws-train:{'d' * 16}" in text
    assert f"--build-arg FROM_IMAGE=kws-train:{'d' * 16}" in text
    assert "--secret" not in text


def test_failed_build_leaves_no_id_file(fake_docker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe, _ = fake_docker
    monkeypatch.setenv("FAKE_BUILD_FAILS", "1")
    iid = tmp_path / "train.id"
    with pytest.raises(StageError, match="docker build failed"):
        bi.main(["--name", "train", "--dockerfile", str(ROOT / "docker/train.Dockerfile"), "--base-image", "b:1",
                 "--iidfile", str(iid), "--docker", str(exe), "--cacert", ""])
    assert not iid.exists()


def test_missing_base_image_without_registry_says_how_to_fix(fake_docker, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    exe, _ = fake_docker
    monkeypatch.setenv("FAKE_NO_IMAGE", "1")
    with pytest.raises(StageError, match=r"invoke images.base.*BASE_IMAGE=kws-base:bookworm"):
        bi.main(["--name", "train", "--dockerfile", str(ROOT / "docker/train.Dockerfile"), "--base-image",
                 "python:3.11-slim-bookworm", "--iidfile", str(tmp_path / "t.id"), "--docker", str(exe), "--cacert", ""])


def test_no_buildkit_client_is_a_clear_error(fake_docker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe, _ = fake_docker
    monkeypatch.setenv("FAKE_VERSION", "28.2.2")
    monkeypatch.setattr(bi, "FALLBACK_CLIENTS", ())
    with pytest.raises(StageError, match=r"no docker client that can build with BuildKit.*28\.2\.2 \(buildx: no\)"):
        bi.main(["--name", "train", "--dockerfile", str(ROOT / "docker/train.Dockerfile"), "--base-image", "b:1",
                 "--iidfile", str(tmp_path / "t.id"), "--docker", str(exe)])


def test_script_runs_from_the_makefile_recipe_form(tmp_path: Path) -> None:
    """`python3 docker/build_image.py` (the recipe's form) imports the shared helpers and shows its help."""
    r = subprocess.run(["python3", "docker/build_image.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                       check=False, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert "--from-iidfile" in r.stdout
