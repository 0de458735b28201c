"""Invoke tasks: imperative and remote work. Every file artifact is built by make (see Makefile).

    invoke --list
"""

import shlex
import sys

from invoke import Collection, Exit, task

from device import tasks as board_tasks
from pulsar2 import tasks as pulsar2_tasks

ns = Collection()
ns.add_collection(board_tasks.board)
ns.add_task(board_tasks.deploy)
ns.add_task(board_tasks.verify)
ns.add_task(board_tasks.eval_npu)
ns.add_task(board_tasks.bench)
ns.add_task(board_tasks.listen)
ns.add_task(board_tasks.service)
ns.add_task(board_tasks.record)
ns.add_collection(pulsar2_tasks.pulsar2)


# ==== images, Docker daemon, CI (issue 5; the work is in make and docker/*.py) =====================
# docker/ is deliberately not a Python package (it would shadow the Docker SDK), so these tasks stay here.
IMAGE_NAMES = ("train", "pulsar2-emulator", "board-emulator")


def images_make_command(only: str = "", base_image: str = "", build: str = "build") -> str:
    """The make command that brings the image id files (<build>/images/<name>.id) up to date."""
    names = IMAGE_NAMES if not only else tuple(n.strip() for n in only.split(","))
    unknown = [n for n in names if n not in IMAGE_NAMES]
    if unknown:
        raise Exit(f"--only {only}: unknown image(s) {unknown}; choose from {', '.join(IMAGE_NAMES)}", code=2)
    targets = " ".join(shlex.quote(f"{build}/images/{n}.id") for n in names)
    extra = f" BASE_IMAGE={shlex.quote(base_image)}" if base_image else ""
    return f"make RUNNER=docker BUILD={shlex.quote(build)}{extra} {targets}"


@task(help={"only": "comma-separated subset: train, pulsar2-emulator, board-emulator",
            "base_image": "FROM image (default: $BASE_IMAGE or the Makefile's python:3.11-slim-bookworm; "
                          "kws-base:bookworm after `invoke images.base`)",
            "build": "build folder whose images/<name>.id files are the make targets"})
def images_build(c, only="", base_image="", build="build"):
    """Build the Docker images (make rebuilds an image only when its Dockerfile, lock or sources changed)."""
    c.run(images_make_command(only, base_image, build))


@task(help={"name": "tag of the image to create", "force": "rebuild even if the tag exists"})
def images_base(c, name="kws-base:bookworm", force=False):
    """Build a local Debian bookworm base image with debootstrap (for machines without a registry)."""
    if not force and c.run(f"docker image inspect {shlex.quote(name)}", warn=True, hide=True).ok:
        print(f"images.base: {name} exists (use --force to rebuild it)")
        return
    c.run(f"bash docker/base-image.sh {shlex.quote(name)}")


@task(help={"timeout_s": "seconds to wait for the daemon's API"})
def docker_start(c, timeout_s=60):
    """Start dockerd in the background unless a daemon already answers; wait for its socket."""
    c.run(f"{shlex.quote(sys.executable)} docker/daemon.py --timeout-s {float(timeout_s)}")


@task
def ci(c):
    """Run the CI script (.ci/run): install, start dockerd, build the images, test, make all, deploy, eval."""
    c.run("bash .ci/run")


images = Collection("images")
images.add_task(images_build, name="build", default=True)
images.add_task(images_base, name="base")
docker_ns = Collection("docker")
docker_ns.add_task(docker_start, name="start")
ns.add_collection(images)
ns.add_collection(docker_ns)
ns.add_task(ci)
