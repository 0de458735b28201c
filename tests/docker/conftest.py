"""Helpers for the image/CI tests: load the docker/*.py scripts (docker/ is not a package) and skips."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
IMAGE_TAGS = {"train": "kws-train:latest", "pulsar2-emulator": "kws-pulsar2-emulator:latest",
              "board-emulator": "kws-board-emulator:latest"}


def load_script(name: str) -> ModuleType:
    """Import docker/<name>.py under a private module name."""
    mod_name = f"kws_docker_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, DOCKER_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def docker_cli() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not found: apt-get install docker.io")
    if subprocess.run([docker, "info"], capture_output=True, check=False, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon answers: start one with `invoke docker.start`")
    return docker


def require_image(docker: str, which: str) -> str:
    tag = IMAGE_TAGS[which]
    if subprocess.run([docker, "image", "inspect", tag], capture_output=True, check=False).returncode != 0:
        pytest.skip(f"image {tag} not built: `invoke images.base && invoke images --base-image kws-base:bookworm`")
    return tag
