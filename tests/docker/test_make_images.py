"""The images in the Make graph (real make on a copy of the Makefile with stand-in sources).

An image is its id file: a changed lock/Dockerfile rebuilds that image and everything downstream of it,
and nothing else; RUNNER=local never involves an image; `make -n` never talks to Docker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docker.conftest import ROOT

pytestmark = pytest.mark.slow  # make graphs or a real (small) embedding + head build: seconds each

STAGE = re.compile(r"-m ((?!pipeline\.core\.|pulsar2\.choice)(?:pipeline|pulsar2)(?:\.\w+)+)")
IMAGE = re.compile(r"build_image\.py --name ([\w-]+)")


def make(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["make", "--no-print-directory", "-C", str(tree), "DOCKER=/nonexistent/docker", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Makefile and params in a scratch tree; every other source it names is an empty stand-in."""
    t = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "Makefile", t / "Makefile")
    # the sources make reads at parse time (it derives each stage's prerequisites from the import graph)
    for package in ("pipeline", "pulsar2", "device", "schemas"):
        shutil.copytree(ROOT / package, t / package, ignore=shutil.ignore_patterns("__pycache__"))
    for rel in ("data/demo-seeds/ALFA/000.wav", "data/demo-seeds/FONDO/000.wav", "docker/requirements.lock",
                "docker/board-requirements.lock", "pulsar2/emulator/cli.py", "device/emulator/ax_run_model.py"):
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        (t / rel).touch()
    for runner in ("docker", "local"):
        for _ in range(200):  # add whatever source the graph still misses, one at a time
            r = make(t, "-n", f"RUNNER={runner}", "all", "images", check=False)
            m = re.search(r"No rule to make target '([^']+)'", r.stderr)
            if m is None:
                break
            (t / m.group(1)).parent.mkdir(parents=True, exist_ok=True)
            (t / m.group(1)).touch()
        assert r.returncode == 0, r.stderr
    return t


def plan(tree: Path, *args: str) -> tuple[list[str], list[str], str]:
    r = make(tree, "-n", *args)
    return IMAGE.findall(r.stdout), STAGE.findall(r.stdout), r.stdout


@pytest.fixture(scope="module")
def fresh_docker_build(tree: Path) -> str:
    """A build folder where every artifact and image id file is up to date (make -t), nothing run."""
    touch_all(tree, "RUNNER=docker", "BUILD=bd", "all", "images")
    assert make(tree, "-q", "RUNNER=docker", "BUILD=bd", "all", "images", check=False).returncode == 0
    return "bd"


def touch_all(tree: Path, *args: str) -> None:
    for _ in range(50):  # make -t touches files but creates no folders: create each one it asks for
        r = make(tree, "-t", *args, check=False)
        m = re.search(r"touch: open: (\S+): No such file or directory", r.stderr)
        if m is None:
            break
        (tree / m.group(1)).parent.mkdir(parents=True, exist_ok=True)
    assert r.returncode == 0, r.stderr


def test_docker_plan_builds_images_first_and_runs_stages_in_the_training_image(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    images, stages, out = plan(tree, "RUNNER=docker", f"BUILD={outside}", "all")
    assert images == ["train", "pulsar2-emulator"]  # the board image is for deploy, not for `make all`
    assert stages[0] == "pipeline.stages.voices"
    run_lines = [line for line in out.splitlines() if "/nonexistent/docker run" in line]
    assert run_lines, out
    for line in run_lines:
        assert "-u $(id -u):$(id -g)" in line  # files belong to the invoking user
        assert f"-e KWS_IMAGE_ID=$(cat {outside}/images/train.id)" in line  # the image id reaches manifests
        assert f"-v {outside}:{outside}" in line and f"-v {tree}:{tree}" in line  # same paths inside
        assert "--network none" in line
    assert "runner: docker (RUNNER=docker)" in out


def test_gpu_flags_reach_every_stage_container(tree: Path) -> None:
    _, _, out = plan(tree, "RUNNER=docker", "BUILD=bg", "DOCKER_RUN_FLAGS=--gpus all", "all")
    runs = [line for line in out.splitlines() if "/nonexistent/docker run" in line]
    assert runs and all("--gpus all" in line for line in runs)


def test_local_plan_has_no_images(tree: Path) -> None:
    images, stages, out = plan(tree, "RUNNER=local", "BUILD=bl", "all")
    assert images == [] and "docker run" not in out
    assert stages[0] == "pipeline.stages.voices"


def test_images_target_builds_all_three_from_the_base_image(tree: Path) -> None:
    images, _, out = plan(tree, "RUNNER=docker", "BUILD=bi", "BASE_IMAGE=kws-base:bookworm", "images")
    assert images == ["train", "pulsar2-emulator", "board-emulator"]
    assert out.count("--base-image kws-base:bookworm") == 2  # train + board; the emulator is FROM train
    assert "--from-iidfile bi/images/train.id" in out


def test_changed_lock_rebuilds_the_training_image_and_everything_downstream(tree: Path, fresh_docker_build) -> None:
    images, stages, _ = plan(tree, "RUNNER=docker", f"BUILD={fresh_docker_build}", "-W", "docker/requirements.lock", "all")
    assert images == ["train", "pulsar2-emulator"]
    for stage in ("pipeline.stages.dataset", "pipeline.stages.features", "pipeline.stages.train", "pipeline.stages.export", "pipeline.stages.calib",
                  "pulsar2.config", "pulsar2.build", "pulsar2.quant_report", "pipeline.stages.npu_inputs"):
        assert stage in stages


def test_changed_emulator_source_rebuilds_only_the_compile_side(tree: Path, fresh_docker_build) -> None:
    images, stages, _ = plan(tree, "RUNNER=docker", f"BUILD={fresh_docker_build}", "-W",
                             "docker/pulsar2-emulator.Dockerfile", "all")
    assert images == ["pulsar2-emulator"]
    assert "pulsar2.build" in stages
    assert not {"pipeline.stages.dataset", "pipeline.stages.features", "pipeline.stages.train", "pipeline.stages.calib"} & set(stages)


def test_board_image_inputs_do_not_touch_the_pipeline(tree: Path, fresh_docker_build) -> None:
    images, stages, _ = plan(tree, "RUNNER=docker", f"BUILD={fresh_docker_build}", "-W",
                             "docker/board-requirements.lock", "all")
    assert images == [] and set(stages) <= {"pipeline.stages.where"}
    images, _, _ = plan(tree, "RUNNER=docker", f"BUILD={fresh_docker_build}", "-W",
                        "docker/board-requirements.lock", "images")
    assert images == ["board-emulator"]


def test_local_runner_ignores_image_inputs(tree: Path) -> None:
    touch_all(tree, "RUNNER=local", "BUILD=blt", "all")
    images, stages, _ = plan(tree, "RUNNER=local", "BUILD=blt", "-W", "docker/requirements.lock", "all")
    assert images == [] and set(stages) <= {"pipeline.stages.where"}
