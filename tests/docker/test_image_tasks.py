"""Invoke tasks for images, the Docker daemon and CI: which command each runs (MockContext)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from invoke import Exit, MockContext, Result

import tasks
from tests.docker.conftest import ROOT


def test_images_builds_all_three_id_files_through_make() -> None:
    c = MockContext(run={"make RUNNER=docker BUILD=build build/images/train.id build/images/pulsar2-emulator.id "
                         "build/images/board-emulator.id": Result()})
    tasks.images_build(c)
    assert c.run.call_count == 1


def test_images_only_and_base_image() -> None:
    cmd = "make RUNNER=docker BUILD=build-ci BASE_IMAGE=kws-base:bookworm build-ci/images/pulsar2-emulator.id"
    c = MockContext(run={cmd: Result()})
    tasks.images_build(c, only="pulsar2-emulator", base_image="kws-base:bookworm", build="build-ci")
    assert c.run.call_count == 1


def test_images_only_rejects_unknown_names() -> None:
    with pytest.raises(Exit, match="unknown image"):
        tasks.images_build(MockContext(), only="train,pulsar3")


def test_images_base_skips_an_existing_image(capsys) -> None:
    c = MockContext(run={"docker image inspect kws-base:bookworm": Result(exited=0)})
    tasks.images_base(c)
    assert "exists" in capsys.readouterr().out
    assert c.run.call_count == 1


def test_images_base_builds_when_missing_or_forced() -> None:
    c = MockContext(run={"docker image inspect kws-base:bookworm": Result(exited=1),
                         "bash docker/base-image.sh kws-base:bookworm": Result()})
    tasks.images_base(c)
    assert c.run.call_count == 2
    forced = MockContext(run={"bash docker/base-image.sh my-base:1": Result()})
    tasks.images_base(forced, name="my-base:1", force=True)
    assert forced.run.call_count == 1


def test_docker_start_runs_the_idempotent_starter() -> None:
    c = MockContext(run={f"{sys.executable} docker/daemon.py --timeout-s 90.0": Result()})
    tasks.docker_start(c, timeout_s=90)
    assert c.run.call_count == 1


def test_ci_runs_the_ci_script() -> None:
    c = MockContext(run={"bash .ci/run": Result()})
    tasks.ci(c)
    assert c.run.call_count == 1


def test_invoke_lists_the_tasks_with_their_cli_names() -> None:
    r = subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=ROOT, capture_output=True, text=True,
                       check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("images.build (images)", "images.base", "docker.start", "ci "):
        assert name in r.stdout


def test_invoke_images_only_parses_on_the_collection_default(tmp_path) -> None:
    """`invoke images --only X` reaches the default task (dry run: invoke --dry echoes the command)."""
    r = subprocess.run([sys.executable, "-m", "invoke", "--dry", "images", "--only", "train", "--build", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    plain = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout).strip()  # --dry echoes in colour
    assert plain == f"make RUNNER=docker BUILD={tmp_path} {tmp_path}/images/train.id"


def test_ci_script_is_strict_bash() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], check=False).returncode == 0
    # Containers are reached on loopback only.
    assert "172.17." not in text and "127.0.0.1" in text


