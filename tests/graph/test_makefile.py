"""The Make graph, checked with real make: -n plans, -t freshness, -W what-if rebuild sets, value stamps.

Every stage recipe runs ``<python> -m <module>``; a plan is read as the list of modules it would run (the
stamp recipes, which run on every invocation and rewrite a stamp only when its value changed, are not stages).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.core import imports
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # hundreds of make -n plans: minutes

# In the order `make all` runs them (prerequisites left to right).
STAGES = [
    "pipeline.stages.voices", "pipeline.stages.dataset", "pipeline.stages.features", "pipeline.stages.embeddings", "pipeline.stages.train", "pipeline.stages.export", "pipeline.stages.calib",
    "pulsar2.config", "pulsar2.build", "pulsar2.quant_report", "pipeline.stages.parity", "pipeline.stages.npu_inputs",
    "pipeline.eval.holdout_tts",
    "pipeline.eval.detector_calib", "device.runtime.pack", "pipeline.stages.where",
]
# A stage module -> the artifact its recipe makes (relative to BUILD).
TARGET_OF = {
    "pipeline.stages.voices": "voices/manifest.json",
    "pipeline.stages.dataset": "dataset/manifest.json",
    "pipeline.stages.features": "features/manifest.json",
    "pipeline.stages.embeddings": "embeddings/manifest.json",
    "pipeline.stages.train": "model/ckpt.pt",
    "pipeline.stages.export": "model/kws.onnx",
    "pipeline.stages.parity": "reports/onnx_parity.json",
    "pipeline.stages.calib": "calib/calib_kws.tar",
    "pipeline.stages.npu_inputs": "npu_inputs/manifest.json",
    "pulsar2.config": "pulsar2/kws_build_int8_config.json",
    "pulsar2.build": "pulsar2/output/manifest.json",
    "pulsar2.quant_report": "reports/quant_report.json",
    "pipeline.eval.holdout_tts": "holdout-dev/manifest.json",
    "pipeline.eval.detector_calib": "detector/settings.json",
    "device.runtime.pack": "runtime/runtime.json",
    "pipeline.stages.where": "artifacts.txt",
}
DOWNSTREAM_OF_CALIB = ["pulsar2.config", "pulsar2.build", "pulsar2.quant_report", "pipeline.stages.where"]
NOT_THE_TTS_SETS = [s for s in STAGES if s != "pipeline.eval.holdout_tts"]  # they follow the commands, not the seed files
DOWNSTREAM_OF_MODEL = ["pipeline.stages.export", *DOWNSTREAM_OF_CALIB[:-1], "pipeline.stages.parity", "pipeline.eval.detector_calib",
                       "device.runtime.pack", "pipeline.stages.where"]


def make(*args: str, build: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), f"BUILD={build}", "RUNNER=local", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def planned(stdout: str) -> list[str]:
    """The stage modules a `make -n` plan would run, in order."""
    return re.findall(r"-m ((?!pipeline\.core\.|pulsar2\.choice)(?:pipeline|pulsar2|device)(?:\.\w+)+)", stdout)


def touch_all(build: Path, *args: str) -> Path:
    """Every artifact of BUILD exists and is up to date (make -t), without running a stage."""
    for rel in TARGET_OF.values():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
    make("-t", "all", *args, build=build)
    return build


@pytest.fixture
def touched_build(tmp_path: Path) -> Path:
    return touch_all(tmp_path / "build")


def test_dry_run_plans_every_stage_in_order(tmp_path: Path) -> None:
    r = make("-n", "all", build=tmp_path / "b")
    assert planned(r.stdout) == STAGES
    assert "runner: local (RUNNER=local)" in r.stdout
    assert "docker" not in r.stdout.replace("pulsar2.build", "")


def test_the_crnn_family_trains_on_the_features_without_embeddings(tmp_path: Path) -> None:
    r = make("-n", "all", "MODEL=crnn", build=tmp_path / "b")
    assert planned(r.stdout) == [s for s in STAGES if s != "pipeline.stages.embeddings"]
    assert "pipeline/params/models/crnn.toml" in r.stdout and "--embeddings" not in r.stdout
    r = make("-n", "all", "MODEL=nope", build=tmp_path / "b", check=False)
    assert r.returncode != 0 and "MODEL=nope: no model family file pipeline/params/models/nope.toml" in r.stderr


def test_switching_the_family_rebuilds_from_the_dataset_on(tmp_path: Path) -> None:
    """The CRNN has its own window (1 s, the embedding family 2 s): the clips, and everything after them."""
    build = touch_all(tmp_path / "build")
    assert planned(make("-n", "all", "MODEL=crnn", build=build).stdout) == [
        s for s in NOT_THE_TTS_SETS if s not in ("pipeline.stages.voices", "pipeline.stages.embeddings")]


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
    assert planned(make("-n", "all", build=touched_build).stdout) == []
    # the stamps rerun on every invocation; they leave unchanged stamps alone
    stamps = sorted((touched_build / "params").glob("*.json")) + [touched_build / "stamps" / "seeds.json"]
    before = {p: p.stat().st_mtime_ns for p in stamps}
    make("all", build=touched_build)
    assert {p: p.stat().st_mtime_ns for p in stamps} == before


def write_preset(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return f"PRESET_FILE={path}"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("[voices]\ntakes_per_voice = 1", NOT_THE_TTS_SETS),
        ("[dataset]\nper_class = 7", NOT_THE_TTS_SETS[1:]),
        ("[features]\nval_fraction = 0.2", NOT_THE_TTS_SETS[2:]),
        ("[features]\nclip_samples = 24000\nn_frames = 148", NOT_THE_TTS_SETS[1:]),  # the window: clips too
        ("[train]\nepochs = 3", ["pipeline.stages.train", *DOWNSTREAM_OF_MODEL]),
        ("[export]\nparity_samples = 10", DOWNSTREAM_OF_MODEL),
        ("[detector]\nrefractory_s = 2.0", ["pipeline.eval.detector_calib", "device.runtime.pack", "pipeline.stages.where"]),
        ("[calib]\nnum_samples = 10", ["pipeline.stages.calib", *DOWNSTREAM_OF_CALIB]),
        ("[npu_inputs]\nlimit = 10", ["pipeline.stages.npu_inputs", "pipeline.stages.where"]),
        ('[pulsar2]\nnpu_mode = "NPU2"', DOWNSTREAM_OF_CALIB),
    ],
)
def test_a_changed_parameter_rebuilds_exactly_its_downstream(tmp_path: Path, section: str, expected: list[str]) -> None:
    preset = tmp_path / "p.toml"
    build = touch_all(tmp_path / "build", write_preset(preset, "# no overrides\n"))
    r = make("-n", "all", write_preset(preset, section + "\n"), build=build)
    assert planned(r.stdout) == [s for s in STAGES if s in expected]
    # a comment, or the same value written another way, changes no resolved value: nothing rebuilds
    touch_all(build, write_preset(preset, section + "\n"))
    assert planned(make("-n", "all", write_preset(preset, f"# edited\n{section}  # same value\n"), build=build).stdout) == []


def test_switching_presets_rebuilds_what_differs_and_back(tmp_path: Path) -> None:
    """No preset guard: a BUILD folder follows whichever preset is asked for, by the resolved values."""
    build = touch_all(tmp_path / "build", "PARAMS=smoke")
    assert planned(make("-n", "all", "PARAMS=smoke", build=build).stdout) == []
    assert planned(make("-n", "all", "PARAMS=ci", build=build).stdout) == STAGES
    touch_all(build, "PARAMS=ci")
    assert planned(make("-n", "all", "PARAMS=smoke", build=build).stdout) == STAGES


def test_an_interrupted_build_cannot_pass_for_another_preset(tmp_path: Path) -> None:
    """SIGTERM to make while the dataset stage runs: the orphaned stage may still finish its manifest, but the
    parameters it was built with are already stamped, so another preset still rebuilds it."""
    seeds = tmp_path / "seeds"
    shutil.copytree(ROOT / "data" / "demo-seeds", seeds)
    build = tmp_path / "build"
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), f"BUILD={build}", "RUNNER=local", "PARAMS=smoke",
           f"SEEDS={seeds}", f"{build}/dataset/manifest.json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(600):  # until the dataset stage has started
        if any(build.glob(".dataset.*.tmp")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    for _ in range(600):  # the orphan finishes (or not) on its own
        if not any(build.glob(".dataset.*.tmp")):
            break
        time.sleep(0.1)
    r = make("-n", f"SEEDS={seeds}", "PARAMS=ci", f"{build}/dataset/manifest.json", build=build)
    assert planned(r.stdout) == ["pipeline.stages.voices", "pipeline.stages.dataset"]


def test_unknown_preset_is_a_clear_error(tmp_path: Path) -> None:
    r = make("-n", "PARAMS=nope", "all", build=tmp_path, check=False)
    assert r.returncode != 0
    assert "PARAMS=nope: no preset file pipeline/params/presets/nope.toml" in r.stderr
    assert "default" in r.stderr and "smoke" in r.stderr


def test_a_bad_preset_value_stops_make_before_any_stage(tmp_path: Path) -> None:
    preset = tmp_path / "bad.toml"
    r = make("-n", "all", write_preset(preset, "[train]\nepochs = 0\n"), build=tmp_path / "b", check=False)
    assert r.returncode != 0 and planned(r.stdout) == []
    assert f"{preset}: invalid train parameters" in r.stderr and "epochs (--epochs): 0 is less than the minimum of 1" in r.stderr


def test_help_lists_the_aliases(tmp_path: Path) -> None:
    out = make("help", build=tmp_path).stdout
    for name in ("all", "onnx", "axmodel", "calib", "npu-inputs", "test", "clean"):
        assert re.search(rf"^{name}\s", out, re.M), out


# Every make target whose recipe runs a project module -> (the target, relative to BUILD; extra make args).
RECIPES = {
    **{m: (target, ()) for m, target in TARGET_OF.items()},
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


def test_seed_files_rebuild_the_dataset_by_content(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    shutil.copytree(ROOT / "data" / "demo-seeds", seeds)
    build = touch_all(tmp_path / "build", f"SEEDS={seeds}")
    assert planned(make("-n", "all", f"SEEDS={seeds}", build=build).stdout) == []
    cls = sorted(p for p in seeds.iterdir() if p.is_dir())[0]
    first = next(cls.glob("*.wav"))
    os.utime(first)  # touched, same bytes: nothing to rebuild
    assert planned(make("-n", "all", f"SEEDS={seeds}", build=build).stdout) == []
    shutil.copy(first, cls / "my take.wav")  # a new take, with a space in its name
    assert planned(make("-n", "all", f"SEEDS={seeds}", build=build).stdout) == NOT_THE_TTS_SETS
    touch_all(build, f"SEEDS={seeds}")
    (cls / "my take.wav").unlink()  # a removed seed rebuilds too
    assert planned(make("-n", "all", f"SEEDS={seeds}", build=build).stdout) == NOT_THE_TTS_SETS


def test_a_loaded_pulsar2_image_rebuilds_the_axmodel_and_everything_after_it(tmp_path: Path) -> None:
    """The compiler choice is a make input: after an emulated build, loading the vendor image (a fake docker
    that knows it) and naming it reruns the compile step and what follows, not the stages before it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").symlink_to(ROOT / "tests" / "pulsar2" / "fake_docker.py")
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "FAKE_DOCKER_LOG": str(tmp_path / "calls.jsonl"),
           "FAKE_DOCKER_REPO": str(ROOT), "FAKE_DOCKER_IMAGES": ""}
    build = touch_all(tmp_path / "build")
    assert json.loads((build / "stamps" / "pulsar2.json").read_text())["mode"] == "emulator-local"
    r = make("-n", "all", "PULSAR2_IMAGE=pulsar2:4.2", build=build, check=False, **env)
    assert r.returncode != 0 and "cannot be used: no such image" in r.stderr  # named, not loaded: refused
    env["FAKE_DOCKER_IMAGES"] = "pulsar2:4.2"
    r = make("-n", "all", "PULSAR2_IMAGE=pulsar2:4.2", build=build, **env)
    assert planned(r.stdout) == ["pulsar2.build", "pulsar2.quant_report", "pipeline.stages.where"]
    assert json.loads((build / "stamps" / "pulsar2.json").read_text())["mode"] == "real"


def test_an_axmodel_without_its_manifest_is_rebuilt(touched_build: Path) -> None:
    """Killed after the compiler wrote compiled.axmodel but before pulsar2.build checked it and wrote the
    manifest (its last act): the axmodel is not taken as built."""
    (touched_build / "pulsar2" / "output" / "compiled.axmodel").write_bytes(b"half")
    (touched_build / "pulsar2" / "output" / "manifest.json").unlink()
    assert "pulsar2.build" in planned(make("-n", "axmodel", build=touched_build).stdout)
    assert make("-q", "axmodel", build=touched_build, check=False).returncode != 0
