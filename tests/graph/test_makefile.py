"""The Make graph, checked with real make: -n plans, -t/-q freshness, -W what-if rebuild sets.

Every stage recipe runs ``<python> -m <module>``; a plan is read as the list of modules it would run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.core import imports
from tests.conftest import ROOT

# In the order `make all` runs them (prerequisites left to right).
STAGES = [
    "pipeline.stages.dataset", "pipeline.stages.features", "pipeline.stages.train", "pipeline.stages.export", "pipeline.stages.calib",
    "pulsar2.config", "pulsar2.build", "pulsar2.quant_report", "pipeline.stages.npu_inputs", "pipeline.stages.where",
]
# A stage module -> the artifact its recipe makes (relative to BUILD).
TARGET_OF = {
    "pipeline.stages.dataset": "dataset/manifest.json",
    "pipeline.stages.features": "features/manifest.json",
    "pipeline.stages.train": "model/ckpt.pt",
    "pipeline.stages.export": "model/kws.onnx",
    "pipeline.stages.calib": "calib/calib_kws.tar",
    "pipeline.stages.npu_inputs": "npu_inputs/manifest.json",
    "pulsar2.config": "pulsar2/kws_build_int8_config.json",
    "pulsar2.build": "pulsar2/output/compiled.axmodel",
    "pulsar2.quant_report": "reports/quant_report.json",
    "pipeline.stages.where": "artifacts.txt",
}
DOWNSTREAM_OF_CALIB = ["pulsar2.config", "pulsar2.build", "pulsar2.quant_report", "pipeline.stages.where"]


def make(*args: str, build: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), f"BUILD={build}", "RUNNER=local", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def planned(stdout: str) -> list[str]:
    """The stage modules a `make -n` plan would run, in order."""
    return re.findall(r"-m ((?!pipeline\.core\.imports)(?:pipeline|pulsar2)(?:\.\w+)+)", stdout)


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
        ("train.toml", ["pipeline.stages.train", "pipeline.stages.export", *DOWNSTREAM_OF_CALIB]),
        ("export.toml", ["pipeline.stages.export", *DOWNSTREAM_OF_CALIB]),
        ("calib.toml", ["pipeline.stages.calib", *DOWNSTREAM_OF_CALIB]),
        ("npu_inputs.toml", ["pipeline.stages.npu_inputs", "pipeline.stages.where"]),
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
    assert "pipeline.stages.train" in planned(r.stdout)
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


# Every make target whose recipe runs a project module -> (the target, relative to BUILD; extra make args).
RECIPES = {
    **{m: (target, ()) for m, target in TARGET_OF.items()},
    "pipeline.eval.holdout_tts": ("holdout-dev/manifest.json", ()),
    "pipeline.eval.detector_calib": ("detector/settings.json", ()),
    "pipeline.eval.evaluate": ("eval/summary.json", ()),
    "pulsar2.int8_onnx": ("pulsar2/output/emulated_int8.onnx", ()),
}


@pytest.mark.parametrize("module", sorted(RECIPES))
def test_every_imported_project_file_is_a_prerequisite(touched_build: Path, module: str) -> None:
    """Editing any project file a stage module imports must re-run that stage (no stale artifacts)."""
    target, extra = RECIPES[module]
    (touched_build / target).parent.mkdir(parents=True, exist_ok=True)
    for rel in ("holdout-dev/manifest.json", "holdout-tts/manifest.json", "detector/settings.json",
                "pulsar2/output/emulated_int8.onnx", "eval/summary.json"):
        (touched_build / rel).parent.mkdir(parents=True, exist_ok=True)
    make("-t", str(touched_build / target), *extra, build=touched_build)
    assert module not in planned(make("-n", str(touched_build / target), build=touched_build).stdout)
    missing = []
    for rel in imports.closure_files(module):
        r = make("-n", "-W", rel, str(touched_build / target), *extra, build=touched_build)
        if module not in planned(r.stdout):
            missing.append(rel)
    assert not missing, f"{module} imports {missing} but its make rule does not list them as prerequisites"


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
