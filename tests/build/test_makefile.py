"""The Make graph, checked with real make: -n plans, -t/-q freshness, -W what-if rebuild sets.

Every stage recipe runs ``<python> -m <module>``; a plan is read as the list of modules it would run.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

# In the order `make all` runs them (prerequisites left to right).
STAGES = [
    "pipeline.dataset", "pipeline.features", "pipeline.train", "pipeline.export", "pipeline.calib",
    "pulsar2.config", "pulsar2.build", "pulsar2.quant_report", "pipeline.npu_inputs", "pipeline.where",
]
# A stage module -> the artifact its recipe makes (relative to BUILD).
TARGET_OF = {
    "pipeline.dataset": "dataset/manifest.json",
    "pipeline.features": "features/manifest.json",
    "pipeline.train": "model/ckpt.pt",
    "pipeline.export": "model/kws.onnx",
    "pipeline.calib": "calib/calib_kws.tar",
    "pipeline.npu_inputs": "npu_inputs/manifest.json",
    "pulsar2.config": "pulsar2/kws_build_int8_config.json",
    "pulsar2.build": "pulsar2/output/compiled.axmodel",
    "pulsar2.quant_report": "reports/quant_report.json",
    "pipeline.where": "artifacts.txt",
}
DOWNSTREAM_OF_CALIB = ["pulsar2.config", "pulsar2.build", "pulsar2.quant_report", "pipeline.where"]


def make(*args: str, build: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), f"BUILD={build}", "RUNNER=local", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def planned(stdout: str) -> list[str]:
    """The stage modules a `make -n` plan would run, in order."""
    return re.findall(r"-m ((?:pipeline|pulsar2)\.\w+)", stdout)


@pytest.fixture
def touched_build(tmp_path: Path) -> Path:
    """A BUILD dir where every artifact exists and is up to date (make -t), without running anything."""
    build = tmp_path / "build"
    for rel in TARGET_OF.values():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
    make("-t", "all", build=build)
    return build


def test_dry_run_plans_every_stage_in_order(tmp_path: Path) -> None:
    r = make("-n", "all", build=tmp_path / "b")
    assert planned(r.stdout) == STAGES
    assert "runner: local (RUNNER=local)" in r.stdout
    assert "docker" not in r.stdout.replace("pulsar2.build", "")


def test_dry_run_docker_mode_never_calls_docker(tmp_path: Path) -> None:
    # A DOCKER that would fail if executed: `make -n` must still print the whole plan.
    r = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"BUILD={tmp_path}/b", "RUNNER=docker", "DOCKER=/nonexistent/docker", "all"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "runner: docker (RUNNER=docker)" in r.stdout
    assert "/nonexistent/docker run --rm --network none" in r.stdout
    assert "build_image.py --name train" in r.stdout
    assert planned(r.stdout) == STAGES


def test_touched_graph_is_up_to_date(touched_build: Path) -> None:
    assert make("-q", "all", build=touched_build, check=False).returncode == 0
    assert planned(make("-n", "all", build=touched_build).stdout) == []


@pytest.mark.parametrize(
    ("params_file", "expected"),
    [
        ("dataset.toml", STAGES),
        ("features.toml", STAGES[1:]),
        ("train.toml", ["pipeline.train", "pipeline.export", *DOWNSTREAM_OF_CALIB]),
        ("export.toml", ["pipeline.export", *DOWNSTREAM_OF_CALIB]),
        ("calib.toml", ["pipeline.calib", *DOWNSTREAM_OF_CALIB]),
        ("npu_inputs.toml", ["pipeline.npu_inputs", "pipeline.where"]),
        ("pulsar2.toml", DOWNSTREAM_OF_CALIB),
    ],
)
def test_a_params_file_rebuilds_exactly_its_downstream(touched_build: Path, params_file: str, expected: list[str]) -> None:
    r = make("-n", "-W", f"pipeline/params/default/{params_file}", "all", build=touched_build)
    assert planned(r.stdout) == [s for s in STAGES if s in expected]


def test_smoke_preset_files_are_the_prerequisites_with_params_smoke(touched_build: Path) -> None:
    # With PARAMS=smoke the smoke files are prerequisites, so a default file changes nothing.
    r = make("-n", "PARAMS=smoke", "-W", "pipeline/params/default/train.toml", "all", build=touched_build)
    assert planned(r.stdout) == []
    r = make("-n", "PARAMS=smoke", "-W", "pipeline/params/smoke/train.toml", "all", build=touched_build)
    assert "pipeline.train" in planned(r.stdout)
    assert "--params pipeline/params/smoke/train.toml" in r.stdout


def test_unknown_preset_is_a_clear_error(tmp_path: Path) -> None:
    r = make("-n", "PARAMS=nope", "all", build=tmp_path, check=False)
    assert r.returncode != 0
    assert "PARAMS=nope: no preset folder pipeline/params/nope/" in r.stderr
    assert "default" in r.stderr and "smoke" in r.stderr


def test_help_lists_the_aliases(tmp_path: Path) -> None:
    out = make("help", build=tmp_path).stdout
    for name in ("all", "onnx", "axmodel", "calib", "npu-inputs", "test", "clean"):
        assert re.search(rf"^{name}\s", out, re.M), out


def _repo_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """Transitive imports of `module` that are files of this repository (pipeline.*, pulsar2.*)."""
    seen = set() if seen is None else seen
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    if module in seen or not path.exists():
        return seen
    seen.add(module)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in ("pipeline", "pulsar2"):
                _repo_imports(name, seen)
    return seen


def _module_file(module: str) -> str:
    path = module.replace(".", "/") + ".py"
    return path if (ROOT / path).exists() else module.replace(".", "/") + "/__init__.py"


@pytest.mark.parametrize("stage", STAGES)
def test_every_imported_project_file_is_a_prerequisite(touched_build: Path, stage: str) -> None:
    """Editing any project file a stage imports must re-run that stage (no stale artifacts)."""
    missing = []
    for module in sorted(_repo_imports(stage)):
        r = make("-n", "-W", _module_file(module), str(touched_build / TARGET_OF[stage]), build=touched_build)
        if stage not in planned(r.stdout):
            missing.append(_module_file(module))
    assert not missing, f"{stage} imports {missing} but its make rule does not list them as prerequisites"


def test_adding_a_seed_file_rebuilds_everything(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(ROOT / "data" / "demo-seeds", seeds)
    build = tmp_path / "build"
    for rel in TARGET_OF.values():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
    make("-t", "all", f"SEEDS={seeds}", build=build)
    assert planned(make("-n", "all", f"SEEDS={seeds}", build=build).stdout) == []
    cls = sorted(p for p in seeds.iterdir() if p.is_dir())[0]
    new = cls / "999_new.wav"
    shutil.copy(next(cls.glob("*.wav")), new)
    future = (build / "artifacts.txt").stat().st_mtime + 5
    os.utime(new, (future, future))
    os.utime(cls, (future, future))
    assert planned(make("-n", "all", f"SEEDS={seeds}", build=build).stdout) == STAGES


def test_a_build_folder_refuses_another_preset(tmp_path: Path) -> None:
    """Artifacts of one preset must not pass as up to date for another (mtimes alone cannot tell)."""
    build = tmp_path / "build"
    r = make("-n", "PARAMS=smoke", "all", build=build)
    assert f"echo smoke > {build}/params-preset.txt" in r.stdout
    build.mkdir()
    (build / "params-preset.txt").write_text("smoke\n")
    r = make("-n", "all", build=build, check=False)
    assert r.returncode != 0
    assert f"BUILD={build} holds artifacts of PARAMS=smoke, not PARAMS=default" in r.stderr
    assert planned(make("-n", "PARAMS=smoke", "all", build=build).stdout) == STAGES
    assert make("-n", "clean", build=build).returncode == 0
