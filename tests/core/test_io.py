"""Atomic outputs: a killed writer's leftovers are swept at the next write, a live writer's never."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.io import atomic_dir, sweep_stale


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_writers_temporaries_are_swept_at_the_next_write(tmp_path: Path) -> None:
    final = tmp_path / "dataset"
    gone = dead_pid()
    stale_tmp = tmp_path / f".dataset.{gone}.abc123.tmp"
    stale_old = tmp_path / f".dataset.old-{gone}"
    live_tmp = tmp_path / f".dataset.{os.getpid()}.xyz.tmp"   # a writer that is still running: this process
    other = tmp_path / ".features.123.abc.tmp"                 # another output's
    for d in (stale_tmp, stale_old, live_tmp, other):
        (d / "clip.wav").parent.mkdir(parents=True)
        (d / "clip.wav").write_bytes(b"x" * 100)

    with atomic_dir(final) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert (final / "manifest.json").exists()
    assert not stale_tmp.exists() and not stale_old.exists()
    assert live_tmp.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dataset", live_tmp.name, other.name])


def test_a_failed_write_leaves_the_old_output_and_no_temporary(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("killed")
    assert (final / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert sweep_stale(final) == []
