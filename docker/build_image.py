"""Build one of the project's images and write its image id to a file (the Make target for the image).

The id file is what the Makefile's pipeline rules depend on: a changed Dockerfile or lock file rebuilds
the image, rewrites the id file, and so rebuilds everything downstream of it.

Builds use BuildKit so that a host's CA bundle (needed where PyPI is reached through a TLS-intercepting
proxy) is passed as a build *secret*: it is visible to the pip step only and never stored in a layer.
BuildKit needs either a client with the buildx plugin or a client older than 23 (Debian's docker.io
20.10 at /usr/bin/docker builds with ``DOCKER_BUILDKIT=1``); the first such client is used.

    python3 docker/build_image.py --name train --dockerfile docker/train.Dockerfile \\
        --base-image kws-base:bookworm --iidfile build/images/train.id
    python3 docker/build_image.py --name pulsar2-emulator --dockerfile docker/pulsar2-emulator.Dockerfile \\
        --from-iidfile build/images/train.id --iidfile build/images/pulsar2-emulator.id
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (the Makefile does): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.cli import die, run_main, setup_logging
from pipeline.core.io import atomic_write_text

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("train", "pulsar2-emulator", "board-emulator")
# Debian's own client: BuildKit without the buildx plugin (see shared ENVIRONMENT notes in docker/README.md).
FALLBACK_CLIENTS = ("/usr/bin/docker",)
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
NO_REGISTRY_FIX = ("build a local Debian base with `invoke images.base` (docker/base-image.sh) and pass "
                   "BASE_IMAGE=kws-base:bookworm, or point BASE_IMAGE at an image in a registry you can reach")


@dataclasses.dataclass(frozen=True)
class Client:
    """A docker CLI and what it can do, as probed."""

    path: str
    version: str
    has_buildx: bool

    @property
    def major(self) -> int:
        m = re.match(r"(\d+)", self.version)
        return int(m.group(1)) if m else 0

    @property
    def buildkit_ok(self) -> bool:
        # From client 23 on, DOCKER_BUILDKIT=1 delegates to buildx and fails without the plugin.
        return self.has_buildx or 0 < self.major < 23


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def _run_quiet(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=60)


def probe_client(path: str, run: Runner = _run_quiet) -> Client | None:
    """Version and buildx availability of one docker CLI, or None if it does not run."""
    try:
        r = run([path, "version", "--format", "{{.Client.Version}}"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = r.stdout.strip()
    if not version:  # the client ran but e.g. the template failed: treat as unusable
        return None
    try:
        has_buildx = run([path, "buildx", "version"]).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        has_buildx = False
    return Client(path=path, version=version, has_buildx=has_buildx)


def candidate_paths(requested: str) -> list[str]:
    """The requested client (name or path) first, then Debian's; duplicates (same file) removed."""
    out: list[str] = []
    seen: set[str] = set()
    for c in (requested, *FALLBACK_CLIENTS):
        path = shutil.which(c) if os.sep not in c else (c if os.access(c, os.X_OK) else None)
        if path is None:
            continue
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


def pick_client(clients: Sequence[Client | None]) -> Client | None:
    """The first client that can build with BuildKit."""
    for c in clients:
        if c is not None and c.buildkit_ok:
            return c
    return None


def host_ca_bundle(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """The CA bundle to hand to pip inside the build: --cacert, else $PIP_CERT, else the system bundle."""
    if explicit is not None:
        return Path(explicit) if explicit else None
    for c in (env.get("PIP_CERT", ""), *HOST_CA_BUNDLES):
        if c and Path(c).is_file():
            return Path(c)
    return None


def parent_tag(from_iidfile: Path, image_id: str) -> str:
    """A tag naming exactly the parent image (BuildKit resolves tags, not bare ids, in FROM)."""
    stem = from_iidfile.name.removesuffix(".id")
    hex_id = image_id.split(":", 1)[-1]
    return f"kws-{stem}:{hex_id[:16]}"


def build_command(client: Client, *, name: str, dockerfile: Path, context: Path, iidfile: Path,
                  build_args: Mapping[str, str], cacert: Path | None, target: str | None) -> list[str]:
    cmd = [client.path, "build", "--progress=plain", "-f", str(dockerfile), "--iidfile", str(iidfile),
           "-t", f"kws-{name}:latest"]
    for k, v in build_args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    if cacert is not None:
        cmd += ["--secret", f"id=cacert,src={cacert}"]
    if target:
        cmd += ["--target", target]
    cmd.append(str(context))
    return cmd


def _image_exists(client: Client, ref: str) -> bool:
    return _run_quiet([client.path, "image", "inspect", "--format", "{{.Id}}", ref]).returncode == 0


def ensure_base_image(client: Client, ref: str) -> None:
    """A base image must be local or pullable; say how to get one when there is no registry."""
    if _image_exists(client, ref):
        return
    log.info("base image %s is not local; trying docker pull", ref)
    r = subprocess.run([client.path, "pull", ref], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["no message"])[-1]
        die(f"base image {ref}: not on this machine and `docker pull` failed ({why}); {NO_REGISTRY_FIX}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", required=True, choices=NAMES, help="which image (also tagged kws-NAME:latest)")
    p.add_argument("--dockerfile", type=Path, required=True)
    p.add_argument("--iidfile", type=Path, required=True, help="where to write the image id (atomically)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--base-image", help="FROM image, passed as build arg BASE_IMAGE")
    src.add_argument("--from-iidfile", type=Path, help="id file of the parent image, passed as build arg FROM_IMAGE")
    p.add_argument("--context", type=Path, default=ROOT, help="build context (the repository; see .dockerignore)")
    p.add_argument("--target", default=None, help="Dockerfile stage to build")
    p.add_argument("--docker", default=os.environ.get("DOCKER", "docker"), help="docker CLI to try first")
    p.add_argument("--cacert", default=None,
                   help="CA bundle passed to pip as BuildKit secret 'cacert' ('' = none; default: $PIP_CERT or "
                        "the system bundle if present)")
    p.add_argument("--dry-run", action="store_true", help="print the build command and exit")
    args = p.parse_args(argv)
    setup_logging()

    if not args.dockerfile.is_file():
        die(f"{args.dockerfile}: Dockerfile not found; run from the repository root")
    clients = [probe_client(c) for c in candidate_paths(args.docker)]
    client = pick_client(clients)
    if client is None:
        found = ", ".join(f"{c.path} {c.version} (buildx: {'yes' if c.has_buildx else 'no'})" for c in clients if c)
        die(f"no docker client that can build with BuildKit (found: {found or 'none'}); "
            "apt-get install docker.io (its /usr/bin/docker 20.10 builds with DOCKER_BUILDKIT=1) "
            "or install the docker-buildx plugin")

    build_args: dict[str, str] = {}
    if args.base_image is not None:
        build_args["BASE_IMAGE"] = args.base_image
    else:
        try:
            parent_id = args.from_iidfile.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            die(f"{args.from_iidfile}: parent image id file not found; build it first (make {args.from_iidfile})")
        if not parent_id.startswith("sha256:"):
            die(f"{args.from_iidfile}: expected an image id 'sha256:…', got {parent_id[:40]!r}; delete it and rebuild")
        build_args["FROM_IMAGE"] = parent_tag(args.from_iidfile, parent_id)
    cacert = host_ca_bundle(args.cacert, os.environ)

    args.iidfile.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".iid-", dir=args.iidfile.parent) as tmp:
        tmp_iid = Path(tmp) / "iid"
        cmd = build_command(client, name=args.name, dockerfile=args.dockerfile, context=args.context,
                            iidfile=tmp_iid, build_args=build_args, cacert=cacert, target=args.target)
        if args.dry_run:
            print("DOCKER_BUILDKIT=1 " + " ".join(cmd))
            return 0
        if args.base_image is not None:
            ensure_base_image(client, args.base_image)
        else:
            if not _image_exists(client, parent_id):
                die(f"{args.from_iidfile}: image {parent_id[:19]}… is gone from the daemon; "
                    f"delete {args.from_iidfile} and rebuild it")
            subprocess.run([client.path, "tag", parent_id, build_args["FROM_IMAGE"]], check=True)
        log.info("building kws-%s with %s %s (BuildKit)%s", args.name, client.path, client.version,
                 f", CA bundle {cacert} as build secret" if cacert else "")
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        r = subprocess.run(cmd, env=env, check=False)
        if r.returncode != 0:
            die(f"{args.dockerfile}: docker build failed (exit {r.returncode}; log above)")
        image_id = tmp_iid.read_text(encoding="utf-8").strip()
    atomic_write_text(args.iidfile, image_id + "\n")
    print(f"image kws-{args.name}:latest {image_id} -> {args.iidfile}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
