"""Provenance blocks for manifests, checkpoints and ONNX metadata."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.core.io import sha256_file

_LIBS = ("numpy", "torch", "torchaudio", "soundfile", "onnx", "onnxruntime", "jsonschema")


@functools.cache
def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def git_describe() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        r = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return r.stdout.strip() or "unknown"


def image_id() -> str:
    """The container image a stage ran in (set by the Makefile's docker runner), or ``local``."""
    return os.environ.get("KWS_IMAGE_ID", "local")


def manifest(
    stage: str,
    inputs: Iterable[str | os.PathLike[str]] = (),
    params: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest dict: what went in (sha256), with which parameters, made by which code and libraries."""
    return {
        "stage": stage,
        "created_unix": int(time.time()),
        "inputs": {str(p): sha256_file(p) for p in inputs},
        "params": dict(params or {}),
        "provenance": {
            "git": git_describe(),
            "image_id": image_id(),
            "libraries": library_versions(),
            "argv": sys.argv[1:],
        },
        **dict(extra or {}),
    }
