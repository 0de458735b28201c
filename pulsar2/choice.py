"""Which compiler builds the axmodel: the REAL Pulsar2 image, or the project's EMULATOR (in its image or natively).

The choice is a make input: ``python -m pulsar2.choice`` writes it to a stamp (``$(BUILD)/stamps/pulsar2.json``)
that changes exactly when the choice does, so loading the vendor image (``invoke pulsar2.load``) or naming it
(``make all PULSAR2_IMAGE=pulsar2:4.2``) rebuilds the axmodel and everything after it.

Selection (``--image-origin`` is make's ``$(origin PULSAR2_IMAGE)``):

- ``docker image inspect IMAGE`` succeeds -> ``real`` (the id is recorded: a re-loaded image is a new choice);
- the image is missing and the user named it (origin ``command line`` / ``environment``) -> fail at once
  with how to load the vendor tarball or how to use the emulator;
- the image is missing and it is only the Makefile default -> ``emulator-docker`` (runner docker) or
  ``emulator-local`` (runner local, where the default image is not even looked for).

Standard library only: it runs on the host before any container.

    python -m pulsar2.choice --runner docker --image pulsar2:4.2 --image-origin file --out build/stamps/pulsar2.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.io import write_text_if_changed

EXPLICIT_ORIGINS = ("command line", "environment", "environment override", "override")
VENDOR_URL = "https://huggingface.co/AXERA-TECH/Pulsar2 (mirror: https://modelscope.cn/models/AXERA-TECH/Pulsar2)"


class ChoiceError(Exception):
    """The named compiler cannot be used; the message says how to load it or how to use the emulator."""


def load_instructions(image: str) -> str:
    return (
        f"  to use the real Axera compiler, get ax_pulsar2_<ver>.tar.gz from {VENDOR_URL}, then\n"
        f"      invoke pulsar2.load --tarball ax_pulsar2_<ver>.tar.gz     (or: docker load -i ax_pulsar2_<ver>.tar.gz)\n"
        f"      make all PULSAR2_IMAGE=pulsar2:<ver>                      (the tag `docker load` printed)\n"
        f"  to use the project's Pulsar2 EMULATOR instead, do not set PULSAR2_IMAGE (it is {image!r} now);\n"
        f"  see pulsar2/README.md"
    )


def docker_cmd() -> str:
    return os.environ.get("DOCKER", "docker")


def image_status(image: str) -> tuple[bool, str]:
    """``(exists, id or reason)`` from ``docker image inspect``; the reason says why not (no CLI, no daemon, no image)."""
    try:
        r = subprocess.run([docker_cmd(), "image", "inspect", "--format", "{{.Id}}", image],
                           capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        return False, f"the docker client ({docker_cmd()}) is not installed"
    except subprocess.TimeoutExpired:
        return False, "`docker image inspect` timed out (is the Docker daemon healthy?)"
    if r.returncode == 0:
        return True, r.stdout.strip()
    err = (r.stderr or r.stdout).strip().splitlines()
    text = err[-1] if err else f"exit status {r.returncode}"
    if re.search(r"no such (image|object)", text, re.I):
        return False, f"no such image ({text})"
    if re.search(r"cannot connect|is the docker daemon running|docker\.sock|permission denied", text, re.I):
        return False, f"the Docker daemon is not reachable ({text}); start it with `invoke docker.start`"
    return False, f"`docker image inspect` failed ({text})"


def select(runner: str, image: str, origin: str) -> dict[str, str]:
    """``{"mode": "real" | "emulator-docker" | "emulator-local", "image", "image_id", "why"}``;
    raises ChoiceError for a named, missing image."""
    explicit = origin in EXPLICIT_ORIGINS
    if runner == "docker" or explicit:
        exists, reason = image_status(image)
        if exists:
            return {"mode": "real", "image": image, "image_id": reason, "why": f"image {image} found ({reason[:19]})"}
        if explicit:
            raise ChoiceError(f"PULSAR2_IMAGE={image} (from the {origin}) cannot be used: {reason}.\n"
                             + load_instructions(image))
        return {"mode": "emulator-docker", "image": image, "image_id": "", "why": f"default image {image} not found ({reason})"}
    return {"mode": "emulator-local", "image": image, "image_id": "",
            "why": f"runner local and PULSAR2_IMAGE={image} is only the default"}


def read_choice(path: Path) -> dict[str, str]:
    try:
        choice = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise ChoiceError(f"{path}: no compiler choice ({e}); make writes it (python -m pulsar2.choice)") from None
    if choice.get("mode") not in ("real", "emulator-docker", "emulator-local"):
        raise ChoiceError(f"{path}: unknown compiler mode {choice.get('mode')!r}; rerun make")
    return choice


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runner", choices=["docker", "local"], required=True, help="how stages run (make's RUNNER_USED)")
    p.add_argument("--image", default="pulsar2:4.2", help="vendor Pulsar2 image tag")
    p.add_argument("--image-origin", default="default",
                   help="make's $(origin PULSAR2_IMAGE): 'command line'/'environment' = named by the user")
    p.add_argument("--out", type=Path, required=True, help="stamp to (re)write when the choice changes")
    args = p.parse_args(argv)
    try:
        choice = select(args.runner, args.image, args.image_origin)
    except ChoiceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stamp = {k: choice[k] for k in ("mode", "image", "image_id")}  # not "why": its wording is no reason to rebuild
    if write_text_if_changed(args.out, json.dumps(stamp, sort_keys=True) + "\n"):
        print(f"pulsar2: compiler {choice['mode']} ({choice['why']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
