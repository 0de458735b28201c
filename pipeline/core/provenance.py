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


def _process_wall_s() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        return uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def resources() -> dict[str, Any]:
    """What this stage process has cost so far: wall and CPU seconds (its finished worker processes included)
    and peak resident memory (its own, and the largest of its finished children)."""
    import resource

    wall = _process_wall_s()
    t = os.times()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": None if wall is None else round(wall, 2),
            "cpu_s": round(t.user + t.system + t.children_user + t.children_system, 2),
            "peak_rss_mb": round(own, 1), "children_peak_rss_mb": round(children, 1)}


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
        "resources": resources(),
        **dict(extra or {}),
    }
