"""invoke pulsar2.load: runs `docker load -i`, parses the tag, prints the make line."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke import MockContext, Result
from invoke.exceptions import Exit

from pulsar2 import tasks


def test_load_parses_the_tag_and_prints_the_make_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tarball = tmp_path / "ax_pulsar2_4.2.tar.gz"
    tarball.write_bytes(b"x")
    c = MockContext(run={f"docker load -i {tarball}": Result("Loading layer  1.2MB/1.2MB\nLoaded image: pulsar2:4.2\n")})
    tasks.load(c, str(tarball))
    out = capsys.readouterr().out
    assert "Loaded Pulsar2 image: pulsar2:4.2" in out
    assert "make all PULSAR2_IMAGE=pulsar2:4.2" in out


def test_parse_loaded_variants() -> None:
    assert tasks.parse_loaded("Loaded image: a:1\nLoaded image: pulsar2:7.0-lite\n") == "pulsar2:7.0-lite"
    assert tasks.parse_loaded("Loaded image ID: sha256:abc\n") == "sha256:abc"
    with pytest.raises(ValueError, match="no 'Loaded image:' line"):
        tasks.parse_loaded("open /var/lib/docker/tmp: no space left on device\n")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(Exit, match="no such file"):
        tasks.load_tarball(MockContext(), tmp_path / "missing.tar.gz")
    tarball = tmp_path / "t.tar.gz"
    tarball.write_bytes(b"x")
    c = MockContext(run={f"docker load -i {tarball}": Result("", stderr="daemon down", exited=1)})
    with pytest.raises(Exit, match="failed"):
        tasks.load_tarball(c, tarball)
