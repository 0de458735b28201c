"""Invoke tasks for the Pulsar2 vendor image (imperative Docker work; make never calls these).

    invoke pulsar2.load --tarball ~/Downloads/ax_pulsar2_4.2.tar.gz
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from invoke import Collection, Context, task
from invoke.exceptions import Exit

_LOADED = re.compile(r"^Loaded image:\s*(\S+)\s*$", re.M)
_LOADED_ID = re.compile(r"^Loaded image ID:\s*(\S+)\s*$", re.M)


def parse_loaded(output: str) -> str:
    """The image `docker load` reported: the last ``Loaded image: TAG`` (or the bare ID of an untagged image)."""
    tags = _LOADED.findall(output) or _LOADED_ID.findall(output)
    if not tags:
        raise ValueError(f"`docker load` printed no 'Loaded image:' line; its output was:\n{output.strip()}")
    return tags[-1]


def load_tarball(c: Context, tarball: str | Path, docker: str = "docker") -> str:
    """``docker load -i TARBALL``; returns the loaded tag (e.g. ``pulsar2:4.2``)."""
    path = Path(tarball).expanduser()
    if not path.is_file():
        raise Exit(f"error: {path}: no such file; download ax_pulsar2_<ver>.tar.gz from "
                   "https://huggingface.co/AXERA-TECH/Pulsar2 (see pulsar2/README.md)", code=2)
    r = c.run(f"{docker} load -i {shlex.quote(str(path))}", hide="stdout", warn=True)
    if r is None or not r.ok:
        raise Exit(f"error: `{docker} load -i {path}` failed (is the Docker daemon running? `invoke docker.start`)", code=2)
    try:
        return parse_loaded(r.stdout)
    except ValueError as e:
        raise Exit(f"error: {path}: {e}", code=2) from None


@task(help={"tarball": "the vendor image tarball, e.g. ax_pulsar2_4.2.tar.gz", "docker": "docker client to use"})
def load(c, tarball, docker="docker"):
    """Load the Axera Pulsar2 image from its tarball and print how to build with it."""
    tag = load_tarball(c, tarball, docker)
    print(f"Loaded Pulsar2 image: {tag}")
    print(f"Build the real axmodel with it:\n  make all PULSAR2_IMAGE={tag}")


pulsar2 = Collection("pulsar2", load)
